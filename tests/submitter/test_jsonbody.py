from __future__ import annotations

import json

import pytest

from submitter.jsonbody import MAX_DEPTH, JSONBodyError, parse_json

DEEP = b"[" * 100_000 + b"]" * 100_000


def refused(body: bytes, surrogates: str = "refuse") -> str:
    with pytest.raises(JSONBodyError) as caught:
        parse_json(body, what="the body", surrogates=surrogates)  # type: ignore[arg-type]
    return str(caught.value)


@pytest.mark.parametrize("surrogates", ["refuse", "replace"])
def test_ordinary_json_reads_as_json_loads_reads_it(surrogates: str) -> None:
    body = json.dumps(
        {"a": [1, -2, 3.5, 1e-300, True, None], "b": {"c": "d [{"}, "é": '😀 \\"', "n": 10**39}, ensure_ascii=True
    ).encode()
    assert parse_json(body, what="x", surrogates=surrogates) == json.loads(body)  # type: ignore[arg-type]
    assert parse_json(b'"\\ud83d\\ude00"', what="x", surrogates=surrogates) == "😀"  # type: ignore[arg-type]


def test_nesting_is_limited_without_recursion() -> None:
    assert "the body nests deeper than 64 levels" in refused(DEEP)
    assert "nests deeper" in refused(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    at_limit = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse_json(at_limit, what="x", surrogates="refuse") == json.loads(at_limit)
    assert "nests deeper" in refused(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"text": "[" * 1000 + '\\"{' * 1000}).encode()
    assert parse_json(body, what="x", surrogates="refuse") == json.loads(body)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"n": ' + b"9" * 5000 + b"}", "the body: n: an integer of 5000 digits (at most 40)"),
        (b'{"n": -' + b"9" * 41 + b"}", "n: an integer of 41 digits"),
        (b'{"a": [0, {"b": 1e400}]}', "the body: a[1].b: 1e400 is not a finite number"),
        (b'{"a": -1e400}', "a: -1e400 is not a finite number"),
        (b'{"a": NaN}', "a: NaN is not a number JSON allows"),
        (b"[Infinity]", "[0]: Infinity is not a number JSON allows"),
        (b"-Infinity", "the body: -Infinity is not a number JSON allows"),
    ],
)
def test_numbers_are_limited_and_named_by_their_path(body: bytes, needle: str) -> None:
    assert needle in refused(body)
    assert needle in refused(body, "replace")


def test_forty_digits_are_fine() -> None:
    assert parse_json(b"[" + b"9" * 40 + b"]", what="x", surrogates="refuse") == [10**40 - 1]


def test_refuse_names_the_field_and_position_of_a_lone_surrogate() -> None:
    assert refused(b'{"prompt": "sunset \\ud83d"}') == (
        "the body: prompt: lone surrogate \\ud83d at position 7 cannot be encoded as UTF-8"
    )
    assert "options.tags[1]: lone surrogate \\udc00" in refused(b'{"options": {"tags": ["a", "x\\udc00"]}}')
    assert 'the body: "\\ud83d": lone surrogate' in refused(b'{"\\ud83d": 1}')
    assert "the body: lone surrogate" in refused(b'"\\ud800"')


def test_replace_keeps_the_value_with_u_fffd() -> None:
    body = b'{"message": "bad \\ud83d end", "\\udc00k": ["\\ud800\\ud800"], "ok": "\\ud83d\\ude00"}'
    assert parse_json(body, what="x", surrogates="replace") == {
        "message": "bad \ufffd end",
        "\ufffdk": ["\ufffd\ufffd"],
        "ok": "😀",
    }
    assert parse_json(b'"\\udfff"', what="x", surrogates="replace") == "\ufffd"


def test_bytes_that_are_not_utf8_are_refused_or_replaced() -> None:
    body = b'{"prompt": "\xed\xa0\xbd"}'  # a surrogate encoded as UTF-8: invalid UTF-8
    assert refused(body) == "the body: prompt: lone surrogate \\ud83d at position 0 cannot be encoded as UTF-8"
    assert parse_json(body, what="x", surrogates="replace") == {"prompt": "\ufffd\ufffd\ufffd"}
    assert refused(b'{"p": "\xff"}') == "the body is not UTF-8 (byte 0xff at 7)"
    assert parse_json(b'{"p": "\xff"}', what="x", surrogates="replace") == {"p": "\ufffd"}


def test_syntax_errors_name_the_body() -> None:
    assert refused(b"{not json").startswith("the body is not JSON: Expecting property name")
    assert refused(b"").startswith("the body is not JSON")


def test_the_error_is_a_value_error() -> None:
    assert issubclass(JSONBodyError, ValueError)
