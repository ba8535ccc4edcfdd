"""Tests for the ``where`` expression language: parsing, SQL compilation against SQLite, Python evaluation."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from openastro_parsl.errors import OpenAstroError, WhereError
from openastro_parsl.registry.where import (
    And,
    Comparison,
    Identifier,
    InList,
    Literal,
    Not,
    Or,
    compile_where,
    evaluate_where,
    parse_where,
    referenced_identifiers,
    where_clause,
)

TYPES = {
    "instrument": {None: str, "telescope": str},
    "band": {None: str},
    "field": {None: str, "ra": float, "dec": float},
    "exposure": {None: int, "day_obs": int, "mjd": float, "exptime": float},
    "target": {None: str},
}

COLUMNS = ("instrument", "id", "band", "field", "day_obs", "mjd", "exptime")
ROWS = [
    ("lco1m", 1001, "g", "demo1", 20260228, 61099.10, 30.0),
    ("lco1m", 1002, "r", "demo1", 20260301, 61100.10, 30.5),
    ("lco1m", 1003, "r", "demo2", 20260301, 61100.20, 60.0),
    ("lco1m", 1004, "i", "demo1", 20260302, 61101.15, 120.0),
    ("lco1m", 1042, "g", "demo2", 20260305, 61104.30, 15.25),
    ("lco2m", 2001, "g", "demo1", 20260301, 61100.05, 30.5),
    ("lco2m", 2002, "z", "o'hare", 20260303, 61102.00, 300.0),
    ("lco2m", 2003, "r", "demo2", 20260304, 61103.50, None),  # NULL exptime: SQL three-valued logic
]
ALL_IDS = sorted(row[1] for row in ROWS)

metadata = sa.MetaData()
exposure_table = sa.Table(
    "exposure",
    metadata,
    sa.Column("instrument", sa.String, primary_key=True),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("band", sa.String, nullable=False),
    sa.Column("field", sa.String, nullable=False),
    sa.Column("day_obs", sa.Integer, nullable=False),
    sa.Column("mjd", sa.Float, nullable=False),
    sa.Column("exptime", sa.Float),
)

# (dimension, attribute) -> column name in the exposure table
COLUMN_OF = {
    ("instrument", None): "instrument",
    ("exposure", None): "id",
    ("band", None): "band",
    ("field", None): "field",
    ("exposure", "day_obs"): "day_obs",
    ("exposure", "mjd"): "mjd",
    ("exposure", "exptime"): "exptime",
}


def column(dimension: str, attribute: str | None):
    return exposure_table.c[COLUMN_OF[(dimension, attribute)]]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(request):
    """The exposure table on each registry backend: the compiled SQL must select the same rows on both."""
    database = None
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    else:
        import uuid

        from conftest import drop_databases

        server = request.getfixturevalue("postgres_server")
        database = f"oat_where_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
        admin.dispose()
        engine = sa.create_engine(f"{server}/{database}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(exposure_table), [dict(zip(COLUMNS, row, strict=True)) for row in ROWS])
    yield engine
    engine.dispose()
    if database is not None:
        drop_databases(server, database)


def sql_ids(engine, text: str, binds=None) -> list[int]:
    clause = where_clause(text, types=TYPES, column=column, binds=binds)
    query = sa.select(exposure_table.c.id).order_by(exposure_table.c.id)
    if clause is not None:
        query = query.where(clause)
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def eval_ids(text: str, binds=None) -> list[int]:
    node = parse_where(text)
    selected = []
    for row in ROWS:
        record = dict(zip(COLUMNS, row, strict=True))
        if evaluate_where(node, lambda d, a, record=record: record[COLUMN_OF[(d, a)]], binds, types=TYPES, text=text):
            selected.append(record["id"])
    return sorted(selected)


def assert_table_intact(engine) -> None:
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        assert tables == ["exposure"]
        rows = conn.execute(sa.select(*exposure_table.c).order_by(exposure_table.c.id)).all()
    assert [tuple(r) for r in rows] == sorted(ROWS, key=lambda r: r[1])


def where_error(text: str, binds=None, *, compile_: bool = True) -> str:
    """The message of the WhereError that parsing (and compiling) ``text`` raises."""
    with pytest.raises(WhereError) as info:
        if compile_:
            where_clause(text, types=TYPES, column=column, binds=binds)
        else:
            parse_where(text)
    return str(info.value)


def assert_caret(message: str, text: str, col: int) -> None:
    """The message says ``column col`` and draws the expression with a caret under that column."""
    lines = message.splitlines()
    assert f"at column {col}" in lines[0]
    assert lines[1:] == [f"  {text}", "  " + " " * (col - 1) + "^"]


# --------------------------------------------------------------------------------------------------------------
# Selection: SQL and the Python evaluator must agree with the expected rows

SELECTION_CASES = [
    # comparison operators
    ("band = 'r'", [1002, 1003, 2003]),
    ("band != 'r'", [1001, 1004, 1042, 2001, 2002]),
    ("band <> 'r'", [1001, 1004, 1042, 2001, 2002]),
    ("exposure.day_obs < 20260301", [1001]),
    ("exposure.day_obs <= 20260301", [1001, 1002, 1003, 2001]),
    ("exposure.day_obs > 20260303", [1042, 2003]),
    ("exposure.day_obs >= 20260303", [1042, 2002, 2003]),
    ("exposure = 1042", [1042]),
    ("instrument = 'lco2m'", [2001, 2002, 2003]),
    ("instrument='lco2m'AND band='g'", [2001]),
    # floats vs ints (ints are fine where floats are expected); NULL never matches
    ("exposure.exptime = 30.5", [1002, 2001]),
    ("exposure.exptime = 60", [1003]),
    ("exposure.exptime > 30", [1002, 1003, 1004, 2001, 2002]),
    ("exposure.exptime < 30.5", [1001, 1042]),
    ("NOT exposure.exptime < 30.5", [1002, 1003, 1004, 2001, 2002]),
    ("exposure.exptime >= exposure.exptime", [1001, 1002, 1003, 1004, 1042, 2001, 2002]),
    ("exposure.mjd > 61100.1", [1003, 1004, 1042, 2002, 2003]),
    ("exposure.mjd >= 6.1e4", ALL_IDS),
    ("exposure.mjd > -1", ALL_IDS),
    ("exposure.mjd < .5E+5", []),
    ("exposure.day_obs != +20260301", [1001, 1004, 1042, 2002, 2003]),
    ("exposure.exptime IN (30, 60)", [1001, 1003]),
    ("exposure.exptime NOT IN (30.5)", [1001, 1003, 1004, 1042, 2002]),
    # literal on the left, dimension against dimension
    ("20260301 <= exposure.day_obs", [1002, 1003, 1004, 1042, 2001, 2002, 2003]),
    ("30.5 > exposure.exptime", [1001, 1042]),
    ("'r' = band", [1002, 1003, 2003]),
    ("exposure.day_obs > exposure", ALL_IDS),
    # IN / NOT IN
    ("band IN ('g', 'i')", [1001, 1004, 1042, 2001]),
    ("band IN ('g')", [1001, 1042, 2001]),
    ("band NOT IN ('g', 'i')", [1002, 1003, 2002, 2003]),
    ("NOT band IN ('g','i')", [1002, 1003, 2002, 2003]),
    ("exposure IN (1001, 2003, 9999)", [1001, 2003]),
    # precedence: NOT > AND > OR; parentheses
    ("band = 'g' OR band = 'r' AND instrument = 'lco2m'", [1001, 1042, 2001, 2003]),
    ("band = 'r' AND instrument = 'lco2m' OR band = 'g'", [1001, 1042, 2001, 2003]),
    ("(band = 'g' OR band = 'r') AND instrument = 'lco2m'", [2001, 2003]),
    ("NOT band = 'g' AND field = 'demo1'", [1002, 1004]),
    ("NOT (band = 'g' AND field = 'demo1')", [1002, 1003, 1004, 1042, 2002, 2003]),
    ("NOT NOT band = 'z'", [2002]),
    ("((band = 'z'))", [2002]),
    ("band = 'g' AND (field = 'demo2' OR (exposure.day_obs < 20260301 AND NOT instrument = 'lco2m'))", [1001, 1042]),
    # case-insensitive keywords, any whitespace
    ("band in ('g') and not field = 'demo1' Or exposure = 1004", [1004, 1042]),
    ("band NoT iN ('r', 'g')", [1004, 2002]),
    ("band = 'g'\n  AND\tfield = 'demo2'", [1042]),
    # string literals: '' escapes a quote, double quotes accepted
    ("field = 'o''hare'", [2002]),
    ("field = \"o'hare\"", [2002]),
    ("field = \"demo1\" AND band = 'i'", [1004]),
    # the example from the docs
    (
        "instrument='lco1m' AND band IN ('g','r') AND exposure.day_obs >= 20260301 "
        "AND NOT (field != 'demo1' OR exposure.exptime < 30.5)",
        [1002],
    ),
    # empty: no constraint
    ("", ALL_IDS),
    ("   ", ALL_IDS),
]


@pytest.mark.parametrize(("text", "expected"), SELECTION_CASES)
def test_selection_sql_and_python_agree(engine, text, expected):
    assert sql_ids(engine, text) == expected
    assert eval_ids(text) == expected


BIND_CASES = [
    ("exposure = my_exp", {"my_exp": 1042}, [1042]),
    ("exposure.day_obs >= night", {"night": 20260304}, [1042, 2003]),
    ("min_t < exposure.exptime", {"min_t": 100.0}, [1004, 2002]),
    ("exposure.exptime <= t", {"t": 30}, [1001, 1042]),
    ("band IN (bands)", {"bands": ["g", "z"]}, [1001, 1042, 2001, 2002]),
    ("band IN (bands, 'i')", {"bands": ("r",)}, [1002, 1003, 1004, 2003]),
    ("band NOT IN (bands)", {"bands": {"r", "g", "i"}}, [2002]),
    ("band IN ('z', b)", {"b": "i"}, [1004, 2002]),
    ("band IN (bands)", {"bands": []}, []),
    ("band NOT IN (bands)", {"bands": []}, ALL_IDS),
    ("field = f", {"f": "o'hare"}, [2002]),
    ("band = b", {"b": "r' OR '1'='1"}, []),
    ("band = b", {"b": "r", "unused": object()}, [1002, 1003, 2003]),
]


@pytest.mark.parametrize(("text", "binds", "expected"), BIND_CASES)
def test_binds(engine, text, binds, expected):
    assert sql_ids(engine, text, binds) == expected
    assert eval_ids(text, binds) == expected


# --------------------------------------------------------------------------------------------------------------
# Malicious input: a syntax error, or a plain value bound as a parameter


@pytest.mark.parametrize(
    ("text", "col"),
    [
        ("band = 'r'; DROP TABLE exposure", 11),
        ("band = 'r' OR 1=1 --", 15),  # 1=1 has no dimension
        ("band = 'r' OR exposure=1 --", 26),
        ("band = 'x') UNION SELECT * FROM sqlite_master --", 11),
        ("band = 'r' /* */", 12),
        ("band = 'r\\' OR 1=1", 16),  # no backslash escapes: the string ends after the backslash
        ('band = "r" OR "1"="1"', 15),
    ],
)
def test_malicious_input_is_a_syntax_error(engine, text, col):
    message = where_error(text)
    assert_caret(message, text, col)
    assert_table_intact(engine)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("band = 'r'' OR ''1''=''1'", "r' OR '1'='1"),
        ("band = 'x''); DROP TABLE exposure; --'", "x'); DROP TABLE exposure; --"),
        ("band IN ('g'' UNION SELECT name FROM sqlite_master --')", "g' UNION SELECT name FROM sqlite_master --"),
        ('band = "\'; DELETE FROM exposure; --"', "'; DELETE FROM exposure; --"),
    ],
)
def test_malicious_literals_are_bound_values(engine, text, value):
    clause = where_clause(text, types=TYPES, column=column)
    compiled = clause.compile(dialect=engine.dialect)  # the SQL this backend is sent
    assert value in compiled.params.values() or [value] in compiled.params.values()
    assert value not in str(compiled) and "'" not in str(compiled)  # nothing user-typed is in the SQL text
    assert sql_ids(engine, text) == []  # matches nothing -- not everything
    assert eval_ids(text) == []
    assert_table_intact(engine)


def test_malicious_bind_value_is_bound(engine):
    assert sql_ids(engine, "band IN (bs)", {"bs": ["r'); DROP TABLE exposure; --", "g"]}) == [1001, 1042, 2001]
    assert_table_intact(engine)


# --------------------------------------------------------------------------------------------------------------
# Syntax errors: column, caret, clear wording


def test_syntax_error_message_format():
    text = "band = 'r'; DROP TABLE dataset"
    assert where_error(text, compile_=False) == (
        "where: unexpected ';' at column 11\n  band = 'r'; DROP TABLE dataset\n            ^"
    )


@pytest.mark.parametrize(
    ("text", "col", "phrase"),
    [
        ("band = 'abc", 8, "unterminated string"),
        ('band = "abc', 8, "unterminated string"),
        ("band = 'it''s", 8, "unterminated string"),
        ("(band = 'r'", 12, "expected ')' to close the '(' at column 1, found end of expression"),
        ("((band = 'r') AND field = 'demo1'", 34, "expected ')' to close the '(' at column 1"),
        ("band = 'r')", 11, "unexpected ')'"),
        ("band = 'r' 'g'", 12, "unexpected string 'g'"),
        ("band = 'r' field = 'x'", 12, "unexpected 'field'"),
        ("band IN ()", 9, "empty IN list"),
        ("band IN ('g',)", 14, "expected a value after ','"),
        ("band IN ('g' 'r')", 14, "expected ',' or ')' in the IN list opened at column 9"),
        ("band IN ('g'", 13, "expected ',' or ')'"),
        ("band IN 'g'", 9, "expected '(' after IN"),
        ("band NOT 'g'", 10, "expected IN after NOT"),
        ("band =", 7, "expected a value after '=', found end of expression"),
        ("band = AND field = 'x'", 8, "expected a value after '=', found AND"),
        ("= 'r'", 1, "expected a condition, found '='"),
        ("band = 'r' AND", 15, "expected a condition, found end of expression"),
        ("band = 'r' OR OR field = 'x'", 15, "expected a condition, found OR"),
        ("NOT", 4, "expected a condition, found end of expression"),
        ("()", 1, "empty parentheses"),
        ("band", 5, "expected a comparison operator"),
        ("band 'r'", 6, "expected a comparison operator"),
        ("band == 'r'", 6, "'==' is not an operator"),
        ("band = = 'r'", 8, "expected a value after '=', found '='"),
        ("band = 'r' && field = 'x'", 12, "unexpected '&'"),
        ("band ! 'r'", 6, "unexpected '!'"),
        ("exposure.day_obs.x = 1", 17, "too many '.'"),
        ("exposure. = 1", 10, "expected an attribute name after 'exposure.'"),
        ("exposure = 12abc", 12, "invalid number '12abc'"),
        ("exposure = 1.2.3", 12, "invalid number '1.2.3'"),
        ("exposure = 99999999999999999999", 12, "out of range"),
        ("exposure.mjd = 1e999", 16, "out of range"),
        ("1 = 1", 1, "comparison between two literal values"),
        ("'a' = 'a'", 1, "comparison between two literal values"),
        ("'g' IN ('g')", 1, "IN needs a dimension on its left"),
    ],
)
def test_syntax_errors(text, col, phrase):
    message = where_error(text, compile_=False)
    assert phrase in message.splitlines()[0]
    assert_caret(message, text, col)


def test_first_error_wins_and_nesting_is_limited():
    # tokens are produced lazily, so the parse error before the bad character is the one reported
    assert "at column 6" in where_error("band band ; x", compile_=False)
    deep = "(" * 150 + "band = 'r'" + ")" * 150
    assert "nested too deeply" in where_error(deep, compile_=False)
    nested = parse_where("(" * 50 + "band = 'r'" + ")" * 50)
    assert (nested.op, nested.left.name, nested.right.value, nested.column) == ("=", "band", "r", 51)


def test_multiline_expression_keeps_caret_aligned():
    text = "band = 'r'\nAND fild = 'x'"
    message = where_error(text)
    assert message.splitlines()[1:] == ["  band = 'r' AND fild = 'x'", "  " + " " * 15 + "^"]


def test_where_error_is_user_error():
    assert issubclass(WhereError, OpenAstroError)


# --------------------------------------------------------------------------------------------------------------
# Compile-time errors: names and types


def test_unknown_dimension_lists_known_ones():
    text = "bnad = 'r'"
    message = where_error(text)
    assert message.splitlines()[0] == (
        "where: unknown dimension 'bnad' at column 1; known dimensions: band, exposure, field, instrument, target"
    )
    assert_caret(message, text, 1)
    assert "binds: night" in where_error("nigth = 1", {"night": 1})
    assert "unknown dimension 'expsure'" in where_error("band = 'r' AND expsure.day_obs = 1")


def test_unknown_attribute_lists_known_ones():
    text = "exposure.day_ob = 20260301"
    message = where_error(text)
    assert message.splitlines()[0] == (
        "where: unknown attribute 'exposure.day_ob' at column 10; exposure has attributes: day_obs, exptime, mjd"
    )
    assert_caret(message, text, 10)
    assert "band has no attributes" in where_error("band.name = 'r'")


IN_ONLY_VALUES = "where: an IN list may only hold literal values and binds, got dimension"


@pytest.mark.parametrize(
    ("text", "first_line"),
    [
        ("exposure = '1042'", "where: exposure is an integer, got string '1042' at column 12"),
        ("exposure.day_obs = 20260301.0", "where: exposure.day_obs is an integer, got float 20260301.0 at column 20"),
        ("exposure.day_obs > 2.0e7", "where: exposure.day_obs is an integer, got float 20000000.0 at column 20"),
        ("band = 1", "where: band is a string, got integer 1 at column 8"),
        ("exposure.exptime = '30'", "where: exposure.exptime is a float, got string '30' at column 20"),
        ("band IN ('g', 2)", "where: band is a string, got integer 2 at column 15"),
        ("1042 = exposure AND band = 3.5", "where: band is a string, got float 3.5 at column 28"),
        ("band = exposure", "where: cannot compare band (string) with exposure (integer) at column 1"),
        ("band IN (field)", f"{IN_ONLY_VALUES} field at column 10"),
        ("band IN (exposure.mjd)", f"{IN_ONLY_VALUES} exposure.mjd at column 10"),
    ],
)
def test_type_errors(text, first_line):
    message = where_error(text)
    assert message.splitlines()[0] == first_line
    col = int(first_line.rsplit("column ", 1)[1])
    assert_caret(message, text, col)


@pytest.mark.parametrize(
    ("text", "binds", "phrase"),
    [
        (
            "exposure = my_exp",
            {"my_exp": "1042"},
            "exposure is an integer, got string '1042' from bind 'my_exp' at column 12",
        ),
        ("exposure = flag", {"flag": True}, "exposure is an integer, got boolean True from bind 'flag'"),
        ("exposure = x", {"x": None}, "exposure is an integer, got None from bind 'x'"),
        ("exposure.mjd > x", {"x": float("nan")}, "cannot be compared with NaN from bind 'x'"),
        ("band IN (bands)", {"bands": ["g", 1]}, "band is a string, got integer 1 from bind 'bands' at column 10"),
        (
            "band = bands",
            {"bands": ["g", "r"]},
            "bind 'bands' is a list at column 8; a list bind may only be used inside IN, e.g. band IN (bands)",
        ),
        ("bands = band", {"bands": ("g",)}, "bind 'bands' is a tuple at column 1"),
        ("band = band", {"band": "r"}, "'band' is both a dimension and a bind name at column 1"),
        ("x = y", {"x": 1, "y": 2}, "comparison has no dimension on either side at column 1"),
        ("x IN (1, 2)", {"x": 1}, "IN needs a dimension on its left, got bind 'x' at column 1"),
        ("band IN (bnads)", {"bands": ["g"]}, "unknown bind 'bnads' in IN list at column 10; binds: bands"),
        ("band IN (bands)", None, "unknown bind 'bands' in IN list at column 10; no binds were given"),
    ],
)
def test_bind_errors(text, binds, phrase):
    message = where_error(text, binds)
    assert phrase in message.splitlines()[0]
    assert message.splitlines()[1] == f"  {text}"


def test_compile_without_text_has_no_caret():
    node = parse_where("bnad = 'r'")
    with pytest.raises(WhereError) as info:
        compile_where(node, types=TYPES, column=column)
    assert str(info.value) == (
        "where: unknown dimension 'bnad' at column 1; known dimensions: band, exposure, field, instrument, target"
    )


# --------------------------------------------------------------------------------------------------------------
# AST, referenced identifiers, the Python evaluator


def test_ast_shape_and_columns():
    node = parse_where("exposure.day_obs >= 20260301")
    assert node == Comparison(">=", Identifier("exposure", "day_obs", 1), Literal(20260301, 21), 1)

    a, b, c = "band = 'g'", "band = 'r'", "field = 'x'"
    node = parse_where(f"{a} OR {b} AND NOT {c}")
    assert isinstance(node, Or) and len(node.operands) == 2
    assert isinstance(node.operands[1], And) and isinstance(node.operands[1].operands[1], Not)
    assert node.operands[1].operands[1].column == 30  # the NOT keyword
    assert parse_where("a = 1 AND b = 2 AND c = 3").operands[2].column == 21  # AND chains are flat

    node = parse_where("band not in ('g', bs, -1.5e3, 'it''s')")
    assert node == InList(
        Identifier("band", None, 1),
        (Literal("g", 14), Identifier("bs", None, 19), Literal(-1500.0, 23), Literal("it's", 31)),
        True,
        1,
    )
    assert parse_where("exposure <> 5").op == "!="
    assert parse_where("x = 5").right == Literal(5, 5) and isinstance(parse_where("x = 5.").right.value, float)
    assert parse_where("") is None and parse_where(" \n\t ") is None


def test_referenced_identifiers():
    text = "instrument = 'lco1m' AND exposure.day_obs > night AND band IN (bands) AND NOT exposure = 3"
    node = parse_where(text)
    binds = {"night": 20260301, "bands": ["g"]}
    expected = {("instrument", None), ("exposure", "day_obs"), ("band", None), ("exposure", None)}
    assert referenced_identifiers(node, binds) == expected
    assert ("night", None) in referenced_identifiers(node)
    assert referenced_identifiers(None) == set()


def test_empty_expression_means_no_constraint():
    assert where_clause("  ", types=TYPES, column=column) is None
    assert compile_where(None, types=TYPES, column=column).compare(sa.true())
    assert evaluate_where(None, lambda d, a: None) is True


def test_evaluate_where_three_valued_logic_and_untyped_use():
    values = {("band", None): "r", ("exposure", "exptime"): None}.__getitem__

    def ev(text, binds=None):
        return evaluate_where(parse_where(text), lambda d, a: values((d, a)), binds)

    assert ev("band = 'r'") is True
    assert ev("exposure.exptime < 10") is False
    assert ev("NOT exposure.exptime < 10") is False  # NOT unknown is unknown
    assert ev("exposure.exptime < 10 OR band = 'r'") is True  # unknown OR true is true
    assert ev("NOT (exposure.exptime < 10 AND band = 'g')") is True  # unknown AND false is false
    assert ev("exposure.exptime IN (1.0)") is False and ev("exposure.exptime NOT IN (1.0)") is False
    assert ev("band IN (bs)", {"bs": ["g", "r"]}) is True
    with pytest.raises(WhereError, match="cannot compare string 'r' with integer 1 at column 1"):
        ev("band < 1")  # without types nothing is checked up front, but Python cannot order these
    with pytest.raises(WhereError, match="band is a string, got integer 1"):
        evaluate_where(parse_where("band < 1"), lambda d, a: "r", types=TYPES)


def test_numpy_like_scalars_are_normalised(engine):
    class FakeInt(int):
        pass

    assert sql_ids(engine, "exposure = e", {"e": FakeInt(1003)}) == [1003]
