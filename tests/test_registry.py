from __future__ import annotations

import pytest

from robustzoo.errors import NotFoundError, first_sentence
from robustzoo.registry import DuplicateNameError, Registry, natural_key


def make() -> Registry[int]:
    r: Registry[int] = Registry("attacks")
    for i, n in enumerate(["pgd100", "pgd20", "fgsm", "cw", "PGD5"]):
        r.add(n, i, owner="test")
    return r


def test_natural_sort_and_wildcards():
    r = make()
    assert r.list() == ["cw", "fgsm", "PGD5", "pgd20", "pgd100"]
    assert r.list("pgd*") == ["PGD5", "pgd20", "pgd100"]
    assert r.list("pgd?0") == ["pgd20"]
    assert r.list("gs") == ["fgsm"]  # a bare word matches as a substring
    assert sorted(["a10", "a2", "a1"], key=natural_key) == ["a1", "a2", "a10"]


def test_get_suggests_close_matches_and_command():
    r = make()
    assert r.get("cw") == 3
    with pytest.raises(NotFoundError) as e:
        r.get("pgd2")
    msg = str(e.value)
    assert "'pgd20'" in msg and "robustzoo list attacks" in msg
    assert isinstance(e.value, LookupError) and not isinstance(e.value, KeyError)


def test_duplicates_are_errors():
    r = make()
    with pytest.raises(DuplicateNameError, match="registered twice"):
        r.add("cw", 9, owner="other")


def test_builtin_registries_are_populated():
    from robustzoo.plugins import registry

    assert {"digits", "fashion-mnist", "mnist", "cifar10", "cifar100"} <= set(registry("datasets").list())
    assert {"preact_resnet18", "wrn34_10", "wrn28_10", "cnn_mnist", "smallcnn"} <= set(
        registry("architectures").list())
    assert {"clean", "fgsm", "pgd20", "pgd100", "cw"} <= set(registry("attacks").list())
    assert {"erm", "at"} <= set(registry("objectives").list())
    assert registry("datasets").owner("digits") == "robustzoo.builtins"
    with pytest.raises(NotFoundError, match="datasets"):
        registry("dataset")


@pytest.mark.parametrize(("text", "expected"), [
    ("PytorchStreamReader failed reading zip archive: failed finding central directory. This is an internal "
     "miniz error. If you see this, please report", "PytorchStreamReader failed reading zip archive: failed "
     "finding central directory."),
    ("first line\nsecond line", "first line"),
    ("words " * 40, ("words " * 26).strip() + " …"),  # 160 characters end inside the 27th word: cut before it
    ("  padded  ", "padded"),
])
def test_a_library_error_becomes_its_first_sentence(text, expected):
    assert first_sentence(text) == expected
    assert first_sentence(RuntimeError(text)) == expected


def test_an_error_without_a_message_is_its_type():
    assert first_sentence(EOFError()) == "EOFError"
    assert first_sentence("") == ""
