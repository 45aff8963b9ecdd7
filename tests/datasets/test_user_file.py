"""A user's own data file (``--dataset-file``): formats, label mapping,
dataset ids, and one exact one-line message per bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datasets import user_file
from datasets.common import DatasetValidationError
from datasets.loader import load_dataset
from datasets.user_file import UserFileError, dataset_id_for, file_sha256, load_user_file

N_TRAIN = 455


def example_arrays() -> dict[str, np.ndarray]:
    """breast_cancer (569 x 30, binary): the first 455 rows train, the rest test."""
    from sklearn.datasets import load_breast_cancer

    b = load_breast_cancer()
    X, y = b.data.astype(np.float64), b.target.astype(np.int64)
    return {"X_train": X[:N_TRAIN], "y_train": y[:N_TRAIN], "X_test": X[N_TRAIN:], "y_test": y[N_TRAIN:]}


def write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


def write_csv(path, arrays, feature_names=None):
    """The documented CSV convention: features, then ``label``, ``split`` (and ``sample_weight``)."""
    d = arrays["X_train"].shape[1]
    names = feature_names or [f"f{j}" for j in range(d)]
    parts = []
    for split in ("train", "test"):
        frame = pd.DataFrame(arrays[f"X_{split}"], columns=names)
        frame["label"] = arrays[f"y_{split}"]
        frame["split"] = split
        if "sample_weights" in arrays:
            frame["sample_weight"] = arrays["sample_weights"] if split == "train" else np.nan
        parts.append(frame)
    pd.concat(parts).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def arrays():
    return example_arrays()


def test_npz_and_csv_give_the_same_data(arrays, tmp_path):
    a = load_user_file(write_npz(tmp_path / "bc.npz", arrays))
    b = load_user_file(write_csv(tmp_path / "bc.csv", arrays))
    for u in (a, b):
        assert u.datasets.validation is None and u.sample_weights is None
        assert u.classes.tolist() == [0, 1]
    for split in ("train", "test"):
        x = arrays[f"X_{split}"].astype(np.float32)  # features are float32, as for every dataset
        assert np.array_equal(getattr(a.datasets, split).x, x)
        assert np.array_equal(getattr(b.datasets, split).x, x)
        assert np.array_equal(getattr(a.datasets, split).labels, arrays[f"y_{split}"])
        assert np.array_equal(getattr(b.datasets, split).labels, arrays[f"y_{split}"])
    assert a.sha256 == file_sha256(tmp_path / "bc.npz")


@pytest.mark.parametrize("values, classes", [((-1, 1), [-1, 1]), ((3, 7), [3, 7]), ((1.0, 0.0), [0, 1]),
                                             ((5, 2, 9), [2, 5, 9])])
def test_labels_become_class_indices_in_np_unique_order(arrays, tmp_path, values, classes):
    k = len(values)
    y_train = np.array(values)[np.arange(N_TRAIN) % k]
    y_test = np.array(values)[np.arange(arrays["X_test"].shape[0]) % k]
    u = load_user_file(write_npz(tmp_path / "y.npz", {**arrays, "y_train": y_train, "y_test": y_test}))
    assert u.classes.tolist() == classes
    assert np.array_equal(u.classes[u.datasets.train.labels], y_train)
    assert np.array_equal(u.classes[u.datasets.test.labels], y_test)
    assert u.datasets.train.labels.dtype == np.int64


def test_dataset_id_follows_the_name_and_the_content(arrays, tmp_path):
    path = write_npz(tmp_path / "my data (v2).npz", arrays)
    sha = file_sha256(path)
    assert dataset_id_for(path, sha) == f"file-my_data__v2_-{sha[:12]}"
    changed = {**arrays, "X_train": arrays["X_train"].copy()}
    changed["X_train"][10, 3] += 1.0
    other = write_npz(tmp_path / "my data (v2)-changed.npz", changed)
    assert file_sha256(other) != sha
    assert dataset_id_for(tmp_path / "x" / ("a" * 300 + ".csv"), sha) == f"file-{'a' * 64}-{sha[:12]}"


def test_num_train_is_read_without_loading_the_file(arrays, tmp_path):
    assert user_file.num_train(write_npz(tmp_path / "a.npz", arrays)) == N_TRAIN
    assert user_file.num_train(write_csv(tmp_path / "a.csv", arrays)) == N_TRAIN
    assert user_file.num_train(tmp_path / "missing.npz") is None


def test_the_registry_loads_a_file_and_checks_its_hash(arrays, tmp_path):
    path = write_npz(tmp_path / "bc.npz", arrays)
    sha = file_sha256(path)
    ds = load_dataset(dataset_id_for(path, sha), dataset_file=str(path), dataset_sha256=sha, append_bias=True)
    assert ds.train.x.shape == (N_TRAIN, 31)
    write_npz(path, {**arrays, "y_test": 1 - arrays["y_test"]})
    with pytest.raises(UserFileError) as info:
        load_dataset("x", dataset_file=str(path), dataset_sha256=sha)
    assert str(info.value) == (f"{path}: has changed since this run was configured (sha256 "
                               f"{file_sha256(path)[:12]}..., expected {sha[:12]}...); rerun the command so that "
                               "the run id follows the new content")


def test_sample_weights_of_one_are_accepted_and_others_refused(arrays, tmp_path):
    ones = write_npz(tmp_path / "ones.npz", {**arrays, "sample_weights": np.ones(N_TRAIN)})
    assert load_user_file(ones).sample_weights.tolist() == [1.0] * N_TRAIN
    assert load_dataset("x", dataset_file=ones).train.num_examples == N_TRAIN
    w = np.ones(N_TRAIN)
    w[7] = 2.5
    for path in (write_npz(tmp_path / "w.npz", {**arrays, "sample_weights": w}),
                 write_csv(tmp_path / "w.csv", {**arrays, "sample_weights": w})):
        assert np.array_equal(load_user_file(path).sample_weights, w)
        with pytest.raises(UserFileError) as info:
            load_dataset("x", dataset_file=path)
        assert str(info.value) == (f"{path}: sample_weights are not supported yet: ss_logreg fits unweighted models "
                                   "(the first weight != 1 is at row 7, 2.5); remove the array (or column) to fit "
                                   "without weights")


def _with(**changes):
    def mutate(a):
        a = dict(a)
        for k, v in changes.items():
            if v is None:
                a.pop(k)
            else:
                a[k] = v(a) if callable(v) else v
        return a
    return mutate


def _set(name, index, value):
    def f(a):
        out = a[name].astype(np.float64 if isinstance(value, float) else a[name].dtype).copy()
        out[index] = value
        return out
    return f


# (mutation of the example arrays, the message after "{path}: ")
BAD_NPZ = {
    "nan": (_with(X_train=lambda a: np.where(np.isin(np.arange(N_TRAIN), [4, 9])[:, None] & (np.arange(30) == 2),
                                             np.nan, a["X_train"])),
            "X_train has 2 NaN or infinite value(s); the first is at row 4, column 2"),
    "inf test": (_with(X_test=_set("X_test", (3, 0), np.inf)),
                 "X_test has 1 NaN or infinite value(s); the first is at row 3, column 0"),
    "beyond float32": (_with(X_train=_set("X_train", (0, 1), 1e39)),
                       "X_train has 1 value(s) beyond float32's range (3.4e38), where features are stored; the first "
                       "is at row 0, column 1"),
    "badly scaled": (_with(X_train=_set("X_train", (slice(None), 2), 1e30)),
                     "X_train column 2 holds 1e+30 at row 0, column 2 (455 value(s) beyond 2**26 = 6.71e+07 in "
                     "magnitude), which makes the Hessian numerically singular and overflows the loss; standardise "
                     "the columns (subtract the mean, divide by the standard deviation) or rerun with --standardize"),
    "one large test value": (_with(X_test=_set("X_test", (4, 7), -1e30)),
                             "X_test column 7 holds -1e+30 at row 4, column 7 (1 value(s) beyond 2**26"),
    "one class": (_with(y_train=lambda a: np.zeros(N_TRAIN, dtype=np.int64)),
                  f"y_train must contain at least two classes; got 1 ([0]) in {N_TRAIN} rows"),
    "lengths": (_with(y_train=lambda a: a["y_train"][:-1]),
                f"X_train has {N_TRAIN} rows but y_train has {N_TRAIN - 1} labels; they must be equal"),
    "features": (_with(X_test=lambda a: a["X_test"][:, :29]),
                 "X_test has 29 features but X_train has 30; they must be equal"),
    "non-integer labels": (_with(y_test=_set("y_test", 5, 0.5)),
                           "y_test must hold integer class labels; 1 are not integers, the first at row 5 (0.5)"),
    "nan label": (_with(y_train=_set("y_train", 8, np.nan)),
                  "y_train has 1 NaN or infinite value(s); the first is at row 8"),
    "string labels": (_with(y_train=lambda a: np.where(a["y_train"] == 1, "yes", "no")),
                      "y_train must hold integer class labels; got dtype <U3"),
    "empty test": (_with(X_test=lambda a: a["X_test"][:0], y_test=lambda a: a["y_test"][:0]),
                   "the test set is empty (X_test and y_test have 0 rows); the experiment measures test losses"),
    "few test": (_with(X_test=lambda a: a["X_test"][:5], y_test=lambda a: a["y_test"][:5]),
                 "the test set has 5 points; ss_logreg needs at least 6 (it follows six fixed test points)"),
    "unseen test label": (_with(y_test=_set("y_test", 2, 4)),
                          "y_test has 1 label(s) that y_train does not have, the first at row 2 (4); y_train's "
                          "classes are [0, 1]"),
    "missing": (_with(y_test=None), "missing array(s) ['y_test']; an .npz needs ['X_train', 'y_train', 'X_test', "
                                    "'y_test'] (and optionally 'sample_weights')"),
    "unknown": (_with(sample_weight=lambda a: np.ones(N_TRAIN)),
                "unexpected array(s) ['sample_weight']; an .npz holds only ['X_train', 'y_train', 'X_test', "
                "'y_test', 'sample_weights']"),
    "1-D X": (_with(X_train=lambda a: a["X_train"][:, 0]),
              "X_train must be 2-D (n_samples, n_features); got shape (455,)"),
    "2-D y": (_with(y_train=lambda a: a["y_train"][:, None]), "y_train must be 1-D (n_samples,); got shape (455, 1)"),
    "no features": (_with(X_train=lambda a: a["X_train"][:, :0], X_test=lambda a: a["X_test"][:, :0]),
                    "X_train has no features (shape (455, 0))"),
    "negative weight": (_with(sample_weights=_set("sample_weights", 3, -1.0)),
                        "sample_weights must be non-negative; 1 are negative, the first at row 3 (-1.0)"),
    "nan weight": (_with(sample_weights=_set("sample_weights", 6, np.nan)),
                   "sample_weights has 1 NaN or infinite value(s); the first is at row 6"),
    "weights length": (_with(sample_weights=lambda a: np.ones(10)),
                       "X_train has 455 rows but sample_weights has 10 weights; they must be equal"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_each_bad_npz_is_refused_with_its_message(arrays, tmp_path, case):
    mutate, message = BAD_NPZ[case]
    a = {**arrays, "sample_weights": np.ones(N_TRAIN)} if "weight" in case else arrays
    path = write_npz(tmp_path / "bad.npz", mutate(a))
    with pytest.raises(UserFileError) as info:
        load_dataset("x", dataset_file=path)
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value)
    assert isinstance(info.value, (DatasetValidationError, ValueError))


def test_the_scale_limit_is_one_over_the_square_root_of_epsilon(arrays, tmp_path):
    assert user_file.MAX_ABS_FEATURE == 2.0 ** 26 and user_file.MAX_ABS_FEATURE ** -2 >= np.finfo(np.float64).eps
    edge = {**arrays, "X_train": arrays["X_train"].copy()}
    edge["X_train"][0, 0] = 2.0 ** 26  # at the limit: accepted
    load_dataset("x", dataset_file=write_npz(tmp_path / "edge.npz", edge))
    edge["X_train"][0, 0] = np.nextafter(2.0 ** 26, np.inf)
    with pytest.raises(UserFileError, match="X_train column 0 holds"):
        load_dataset("x", dataset_file=write_npz(tmp_path / "edge.npz", edge))


def test_standardize_scales_the_columns_as_sklearn_does(arrays, tmp_path):
    """``standardize=True``: each column centred and scaled with the training mean and
    standard deviation (oracle: scikit-learn's StandardScaler); a badly scaled file loads."""
    from sklearn.preprocessing import StandardScaler

    bad = {**arrays, "X_train": arrays["X_train"].copy(), "X_test": arrays["X_test"].copy()}
    bad["X_train"][:, 2] *= 1e27
    bad["X_test"][:, 2] *= 1e27
    bad["X_train"][:, 5] = 3.0  # a constant column: only centred
    path = write_npz(tmp_path / "bad.npz", bad)
    with pytest.raises(UserFileError, match="--standardize"):
        load_dataset("x", dataset_file=path)
    ds = load_dataset("x", dataset_file=path, standardize=True)
    scaler = StandardScaler().fit(bad["X_train"])
    # Features are stored as float32 (DataSet): compare at float32's resolution.
    np.testing.assert_allclose(ds.train.x, scaler.transform(bad["X_train"]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ds.test.x, scaler.transform(bad["X_test"]), rtol=0, atol=1e-5)
    assert np.all(ds.train.x[:, 5] == 0)


def test_csv_messages_name_the_line_and_the_column(arrays, tmp_path):
    x = arrays["X_train"].copy()
    x[4, 2] = np.nan  # an empty cell in the CSV
    path = write_csv(tmp_path / "nan.csv", {**arrays, "X_train": x})
    with pytest.raises(UserFileError) as info:
        load_user_file(path)
    # CSV line 6: the header is line 1 and train rows come first.
    assert str(info.value) == f"{path}: X_train has 1 NaN or infinite value(s); the first is at row 4, column 2 " \
                              "(CSV line 6, column 'f2')"
    y = arrays["y_test"].astype(np.float64)
    y[1] = 2.5
    path = write_csv(tmp_path / "y.csv", {**arrays, "y_test": y})
    with pytest.raises(UserFileError) as info:
        load_user_file(path)
    assert str(info.value) == (f"{path}: y_test must hold integer class labels; 1 are not integers, the first at "
                               f"row 1 (CSV line {N_TRAIN + 3}) (2.5)")


@pytest.mark.parametrize("text, message", [
    ("a,b,label\n1,2,0\n", "missing column 'split'; a CSV needs a header row with a 'label' column, a 'split' column "
                           "(train or test) and numeric feature columns, separated by commas (found columns "
                           "['a', 'b', 'label'])"),
    ("a;label;split\n1;0;train\n", "missing column 'label'; a CSV needs a header row with a 'label' column, a 'split' "
                                   "column (train or test) and numeric feature columns, separated by commas (found "
                                   "columns ['a;label;split'])"),
    ("a,label,split\n", "has a header row but no data rows"),
    ("a,label,split\n1,0,train\n2,1,valid\n", "column 'split' must be 'train' or 'test' on every row; 1 row(s) are "
                                              "not, the first on line 3 ('valid')"),
    ("a,label,split\n1,0,train\nx,1,test\n", "feature column 'a' must be numeric; line 3 holds 'x'"),
    ("label,split\n0,train\n1,test\n", "has no feature columns (every column other than label, split, sample_weight "
                                       "is a feature)"),
    ("a,label,split\n1,no,train\n2,yes,train\n", "y_train must hold integer class labels; 2 are not numbers, the "
                                                 "first at row 0 (CSV line 2) ('no')"),
    ("a,a,label,split\n1,2,0,train\n", "duplicate column name(s) ['a']"),
    ("", "is not a readable CSV file (EmptyDataError: No columns to parse from file)"),
])
def test_each_bad_csv_is_refused_with_its_message(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(UserFileError) as info:
        load_user_file(path)
    assert str(info.value) == f"{path}: {message}"


@pytest.mark.parametrize("name, content, message", [
    ("data.txt", b"1,2", "--dataset-file must end in .npz or .csv (see README \"Ask the question of your own data\"); "
                         "got suffix '.txt'"),
    ("data.npz", b"not a zip file", None),
    ("missing.npz", None, "no such file (--dataset-file)"),
])
def test_unreadable_files_are_refused(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserFileError) as info:
        load_user_file(path)
    if message is None:
        assert str(info.value).startswith(f"{path}: is not a readable .npz file (")
    else:
        assert str(info.value) == f"{path}: {message}"


def test_odd_files_are_refused_in_one_line(arrays, tmp_path):
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, arrays["X_train"])
    (tmp_path / "folder.npz").mkdir()
    for path in (npy, tmp_path / "folder.npz"):
        with pytest.raises(UserFileError) as info:
            load_user_file(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
        assert user_file.num_train(path) is None
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("a, label, split\n" + "".join(f"{i}, {i % 2}, train\n" for i in range(8))
                      + "".join(f"{i}, {i % 2}, test\n" for i in range(6)))
    assert user_file.num_train(spaced) == 8 and load_user_file(spaced).datasets.test.num_examples == 6


def test_object_arrays_are_never_unpickled(arrays, tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, **{**arrays, "y_train": arrays["y_train"].astype(object)})
    with pytest.raises(UserFileError, match=r"y_train cannot be read without pickle .*save plain numeric arrays"):
        load_user_file(path)
