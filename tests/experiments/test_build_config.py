"""Every rule on the flags of ss_logreg is checked when the config is built,
including the group sizes, from the known number of training points."""
import pytest

from datasets.loader import OFFLINE_DATASETS, load_dataset
from experiments.common import ConfigError
from experiments.subset_influence import NUM_TRAIN, build_config


@pytest.mark.parametrize("dataset_id", OFFLINE_DATASETS)
def test_known_training_sizes_match_the_loaders(dataset_id):
    assert NUM_TRAIN[dataset_id] == load_dataset(dataset_id).train.num_examples


def test_known_training_size_of_hospital(shared_data, tmp_path):
    """hospital's size is fixed by its loader (10,000 per class)."""
    import shutil

    archive = shared_data / "hospital" / "dataset_diabetes.zip"
    if not archive.is_file():
        pytest.skip(f"{archive} not found")
    (tmp_path / "hospital").mkdir()
    shutil.copy(archive, tmp_path / "hospital" / archive.name)
    assert NUM_TRAIN["hospital"] == load_dataset("hospital", data_dir=tmp_path).train.num_examples


@pytest.mark.parametrize("kwargs, fragments", [
    (dict(subset_rel_size=1.0), ["--subset-rel-size 1.0", "455 of the 455", "relative size < 1"]),
    (dict(subset_rel_size=0.001), ["--subset-rel-size 0.001", "int(455 x 0.001) = 0", ">= 1/455"]),
    (dict(subset_choice_type="range", subset_min_rel_size=0.002), ["--subset-min-rel-size 0.002", "= 0 points"]),
    (dict(subset_choice_type="range", subset_max_rel_size=1.0), ["--subset-max-rel-size 1.0", "leaving 0"]),
    (dict(subset_seed=-1), ["--subset-seed", "-1"]),
    (dict(subset_seed=2 ** 32), ["--subset-seed", str(2 ** 32)]),
    (dict(num_subsets=10 ** 20), ["--num-subsets must be <="]),
    (dict(tag="a/b"), ["--tag", "'a/b'"]),
    (dict(tag=""), ["--tag"]),
    (dict(tag="x" * 250), ["shorten --tag"]),
    (dict(fixed_reg=1e308), ["--fixed-reg 1e+308", "not a finite"]),
])
def test_bad_flags_fail_when_the_config_is_built(kwargs, fragments):
    with pytest.raises(ConfigError) as info:
        build_config(dataset_id="breast_cancer", **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_group_sizes_use_num_train_when_given_and_the_table_otherwise():
    build_config(dataset_id="breast_cancer", subset_rel_size=0.999)  # 454 of 455: one point left
    with pytest.raises(ConfigError, match="int\\(300 x 0.003\\) = 0"):
        build_config(dataset_id="breast_cancer", subset_rel_size=0.003, num_train=300)
    # Under 400 points the tail groups cannot be drawn: skipped with all types (phase 5 logs
    # it), refused when --group-types asks for them.
    build_config(dataset_id="breast_cancer", subset_rel_size=0.5, num_train=399)
    with pytest.raises(ConfigError, match="--group-types random,pos_tail_test: .*399 training points, too few "
                                          "for the tail groups.*; leave out pos_tail_test"):
        build_config(dataset_id="breast_cancer", subset_rel_size=0.5, num_train=399,
                     group_types="pos_tail_test,random")
    build_config(dataset_id="breast_cancer", subset_rel_size=0.5, num_train=400, group_types="pos_tail_test")
    # The paper's range run on hospital: 0.25% of 20,000 = 50 points.
    build_config(dataset_id="hospital", subset_choice_type="range", num_subsets=100)
    with pytest.raises(ConfigError, match="hospital has 20000"):
        build_config(dataset_id="hospital", subset_choice_type="range", subset_min_rel_size=1e-5)
    # reduced_cdr's size depends on the CDR database: checked when phase 5 draws the groups.
    assert "reduced_cdr" not in NUM_TRAIN
    build_config(dataset_id="reduced_cdr", subset_rel_size=1.0)


def test_spam_vocab_filter_flag():
    from experiments.subset_influence import build_config, run_id_from_config

    default = build_config(dataset_id="spam", num_subsets=3)
    assert "vocab_filter" not in default["dataset_config"]
    assert build_config(dataset_id="spam", num_subsets=3, spam_vocab_filter="lexeme_prob") == default
    old = build_config(dataset_id="spam", num_subsets=3, spam_vocab_filter="none")
    assert old["dataset_config"]["vocab_filter"] == "none"
    assert run_id_from_config(old) == run_id_from_config(default) + "_vocab-none"
    with pytest.raises(ConfigError, match="--spam-vocab-filter applies to --dataset-id spam only"):
        build_config(dataset_id="hospital", num_subsets=3, spam_vocab_filter="none")
    with pytest.raises(ConfigError, match="--spam-vocab-filter must be one of"):
        build_config(dataset_id="spam", num_subsets=3, spam_vocab_filter="k20000")
