"""The query bench reads each answer's Server-Timing into steps, keeping apart which index answered."""

from bench._query_load import _server_timing


def test_steps_are_read_with_their_descriptions_as_columns_of_their_own() -> None:
    header = 'lexical;dur=3.50, embed;dur=9.10, vector;dur=0.92;desc="replica", fuse;dur=0.40'

    assert _server_timing(header) == {"lexical": 3.5, "embed": 9.1, "vector (replica)": 0.92, "fuse": 0.4}
    assert _server_timing('vector;dur=5.00;desc="chroma"') == {"vector (chroma)": 5.0}
    assert _server_timing("") == {}
