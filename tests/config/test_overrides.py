import pytest

from bespoke_exp.config.overrides import expand_arguments, expand_ellipsis


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("epoch=1,2,...,10", "epoch=1,2,3,4,5,6,7,8,9,10"),
        ("epoch=2,4,...,10", "epoch=2,4,6,8,10"),
        ("epoch=1,...,4", "epoch=1,2,3,4"),
        ("guidance=5,7.5,...,12.5", "guidance=5,7.5,10,12.5"),
        ("sampler.steps=30,20,...,10", "sampler.steps=30,20,10"),
        # Everything else is Hydra's business and passes through untouched.
        ("guidance=5,7.5,10", "guidance=5,7.5,10"),
        ("epoch=range(1,11)", "epoch=range(1,11)"),
        ("prompts.items.0.text='a, b, ...'", "prompts.items.0.text='a, b, ...'"),
    ],
)
def test_expand_ellipsis(argument, expected):
    assert expand_ellipsis(argument) == expected


@pytest.mark.parametrize("argument", ["epoch=1,2,...,10.5", "epoch=1,2,4,...,10"])
def test_expand_ellipsis_rejects_sequences_that_do_not_fit(argument):
    with pytest.raises(ValueError, match="epoch="):
        expand_ellipsis(argument)


def test_expand_arguments_leaves_flags_alone():
    assert expand_arguments(["-m", "epoch=1,2,...,3", "--cfg", "job"]) == [
        "-m",
        "epoch=1,2,3",
        "--cfg",
        "job",
    ]
