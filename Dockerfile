# The same environment as the README's install: Python 3.11 and requirements.txt.
FROM python:3.11-slim
WORKDIR /opt/group-influence
COPY requirements.txt .
RUN python -m pip install --no-cache-dir -r requirements.txt
COPY . .
# PYTHONPATH: the project importable by `dask scheduler` and `dask worker` started in the image
# (a Dask scheduler unpickles task graphs, so it imports the project like the workers).
ENV MPLBACKEND=Agg TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=/opt/group-influence
# Default: the offline reproduction (README's main job) inside the container.
CMD ["python", "scripts/reproduce.py"]
