"""Stop strings on streamed text: nothing of a stop string ever reaches the client."""

from __future__ import annotations

from appliance.engine.stopping import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    return "".join(matcher.feed(p) for p in pieces) + matcher.flush()


def test_text_without_stop_strings_passes_through() -> None:
    assert feed_all(StopMatcher([]), ["Hello", " world"]) == "Hello world"


def test_stop_string_inside_one_piece_cuts_there() -> None:
    matcher = StopMatcher(["END"])
    assert feed_all(matcher, ["one two END three"]) == "one two "
    assert matcher.stopped


def test_stop_string_split_across_pieces_is_never_partly_sent() -> None:
    matcher = StopMatcher(["<stop>"])
    sent = [matcher.feed(p) for p in ["abc<s", "to", "p> tail"]]
    assert sent == ["abc", "", ""]
    assert matcher.stopped


def test_held_text_is_released_when_it_turns_out_not_to_be_a_stop() -> None:
    matcher = StopMatcher(["\n\n"])
    assert matcher.feed("line\n") == "line"
    assert matcher.feed("next") == "\nnext"
    assert not matcher.stopped


def test_held_text_is_released_at_the_end() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("end #") == "end "
    assert matcher.flush() == "#"


def test_earliest_of_several_stop_strings_wins() -> None:
    assert feed_all(StopMatcher(["b", "a"]), ["xxabc"]) == "xx"
