# The project's environment: Python 3.11 and the pinned requirements.txt (as scripts/setup_env.sh).
# Build: docker build -t group-influence .   (.dockerignore keeps .venv, data/, output/, plots/ out)
# Run:   see docs/docker.md (volumes for data/ and output/, Dask workers).
FROM python:3.11-slim
WORKDIR /opt/group-influence
COPY requirements.txt .
RUN python -m pip install --no-cache-dir -r requirements.txt
COPY . .
# PYTHONPATH makes the packages importable from any working directory, which a
# `dask worker` started in this image needs to run the project's tasks.
ENV PYTHONPATH=/opt/group-influence MPLBACKEND=Agg TF_CPP_MIN_LOG_LEVEL=2
# Default: the offline main job (scripts/reproduce.py); results in output/, figures in plots/.
CMD ["python", "scripts/reproduce.py"]
