"""E.164 normalisation and the template sandbox, driven by tables of real inputs."""

from __future__ import annotations

import pytest

from chertcast.phones import normalise
from chertcast.render import MessageTemplate, TemplateProblem, bubbles, variable_name


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("1-415-555-2671", "US", "+14155552671"),
        ("+1 415 555 2671", "GB", "+14155552671"),
        ("14155552671", "US", "+14155552671"),
        ("14155552671.0", "US", "+14155552671"),  # a number cell printed as a float
        ("447400123456", "US", "+447400123456"),  # an Excel number cell that lost its "+"
        ("07400 123456", "GB", "+447400123456"),
        ("+33 6 12 34 56 78", "US", "+33612345678"),
    ],
)
def test_valid_numbers(raw: str, region: str, e164: str) -> None:
    assert normalise(raw, region).e164 == e164


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        ("", "phone_empty", "empty"),
        ("n/a", "phone_invalid", "not a phone number"),
        ("123", "phone_invalid", "too short"),
        ("+999 1234 5678", "phone_invalid", "unknown country code"),
        ("+1 415 555 26711234", "phone_invalid", "too long"),
        ("1.4155552671E10", "phone_scientific", "scientific notation"),
        ("+44 7700 900123", "phone_invalid", "not a valid number"),  # UK drama range: invalid
    ],
)
def test_invalid_numbers_have_reasons(raw: str, code: str, words: str) -> None:
    result = normalise(raw, "US")
    assert result.e164 is None and result.error == code and words in result.reason


def test_non_mobile_numbers_warn() -> None:
    assert "toll-free" in (normalise("+1 800 555 0199", "US").warning or "")
    assert "landline" in (normalise("+44 20 7946 0000", "US").warning or "")
    assert normalise("+14155552671", "US").warning is None  # US: FIXED_LINE_OR_MOBILE is fine


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("First Name", "first_name"),
        ("E-mail", "e_mail"),
        ("2nd Line", "col_2nd_line"),
        ("  CRM   ID ", "crm_id"),
        ("Ünïcode", "ünïcode"),
        ("!!!", ""),
    ],
)
def test_variable_names(header: str, name: str) -> None:
    assert variable_name(header) == name


def test_empty_variable_is_a_row_error_unless_defaulted() -> None:
    strict = MessageTemplate("Hi {{ first_name }},", "t")
    assert strict.render({}).error == "empty_variable"
    assert strict.render({}).variable == "first_name"
    assert "None" not in (strict.render({"first_name": "Ann"}).body or "")
    lenient = MessageTemplate('Hi {{ first_name | default("there", true) }},', "t")
    assert lenient.render({}).body == "Hi there,"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% set x = [].append(1) %}{{ x }}",
    ],
)
def test_sandbox_refuses_python_internals(source: str) -> None:
    template = MessageTemplate(source, "evil.j2")
    with pytest.raises(TemplateProblem, match=r"evil\.j2"):
        template.render({})


def test_syntax_error_names_file_and_line() -> None:
    with pytest.raises(TemplateProblem, match=r"t.j2, line 2: template syntax error"):
        MessageTemplate("ok\n{{ broken ", "t.j2")


def test_bubbles_split_on_blank_lines() -> None:
    assert bubbles("Hi\n\nSecond\nline\n \n\nThird") == ["Hi", "Second\nline", "Third"]
    assert MessageTemplate("a  \r\n\r\nb\n\n", "t").render({}).body == "a\n\nb"


def test_north_american_fast_path_matches_the_general_parser() -> None:
    """The fast path must give exactly what phonenumbers.parse gives, valid or not."""
    import random

    import phonenumbers

    from chertcast.phones import _parse_nanp

    rng = random.Random(5)
    layouts = [
        "({a}) {b}-{c}",
        "{a}.{b}.{c}",
        "+1 {a} {b} {c}",
        "1{a}{b}{c}",
        "{a}{b}{c}",
        "+1-{a}-{b}-{c}",
        "1 ({a}) {b}-{c}",
        "({a}){b}-{c}",
        "+1({a}){b}{c}",
    ]
    checked = 0
    for _ in range(3000):
        a = f"{rng.randrange(200, 1000)}"
        b, c = f"{rng.randrange(0, 1000):03d}", f"{rng.randrange(0, 10000):04d}"
        text = rng.choice(layouts).format(a=a, b=b, c=c)
        for region in ("US", "CA", "GB", "DE"):
            fast = _parse_nanp(text, region)
            if fast is None:
                continue
            slow = phonenumbers.parse(text, region)
            assert (fast.country_code, fast.national_number) == (slow.country_code, slow.national_number), text
            assert phonenumbers.number_type(fast) == phonenumbers.number_type(slow), text
            checked += 1
    assert checked > 5000
    assert _parse_nanp("(415) 555-2671", "GB") is None  # national layout outside +1: general parser
    assert _parse_nanp("+44 7400 123456", "US") is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # an invalid number names its own country, not the campaign's default region
        ("+44 7700 900123", "'+44 7700 900123' is not a valid number for GB"),
        # 00 is the international prefix in Europe, not in North America (011): say how to write it
        (
            "001 415 555 0111",
            "'001 415 555 0111' is too long (00 is not the international prefix in US: write it as +14155550111)",
        ),
        (
            "0044 7400 123414",
            "'0044 7400 123414' is too long (00 is not the international prefix in US: write it as +447400123414)",
        ),
        # a letter O typed for a zero: phonenumbers reads letters as a vanity number's digits
        ("415-555-O128", "'415-555-O128' is too short (it holds the letter 'O': a digit typed as a letter?)"),
        ("12", "'12' is too short"),
        ("n/a", "'n/a' is not a phone number"),  # words are not a digit typed as a letter
    ],
)
def test_an_invalid_number_says_what_the_user_most_likely_typed(raw: str, reason: str) -> None:
    result = normalise(raw, "US")
    assert result.e164 is None and result.reason == reason
