"""fsstore/errors.py: one family, each class documented, refused input one builtin."""

from __future__ import annotations

import inspect

import pytest

import fsstore
from fsstore import errors

PUBLIC_ERRORS = [value for name, value in vars(errors).items()
                 if inspect.isclass(value) and issubclass(value, BaseException)
                 and not name.startswith("_")]


def test_every_error_class_says_when_it_is_raised():
    assert len(PUBLIC_ERRORS) > 30
    for cls in PUBLIC_ERRORS:
        doc = cls.__dict__.get("__doc__") or ""  # its own, not one inherited
        assert doc.strip(), cls.__name__
        if cls is not errors.FsStoreError:
            assert doc.startswith("Raised when"), cls.__name__


def test_every_error_is_an_fsstore_error_and_exported():
    for cls in PUBLIC_ERRORS:
        assert issubclass(cls, fsstore.FsStoreError), cls.__name__
        assert getattr(fsstore, cls.__name__) is cls, cls.__name__


def test_refused_arguments_are_all_invalid_input_and_value_errors_never_type_errors():
    invalid = [cls for cls in PUBLIC_ERRORS if cls.__name__.startswith("Invalid")]
    assert {cls.__name__ for cls in invalid} >= {
        "InvalidEvent", "InvalidState", "InvalidMetadata", "InvalidDocument", "InvalidQuery",
        "InvalidFilter", "InvalidSetting", "InvalidSessionId", "InvalidCheckpointId",
        "InvalidBlobRef", "InvalidCollection"}
    for cls in [*invalid, errors.RecordTooLarge]:
        assert issubclass(cls, errors.InvalidInput), cls.__name__
        assert issubclass(cls, ValueError) and not issubclass(cls, TypeError), cls.__name__


def test_a_refused_event_state_and_title_are_caught_as_value_error(store):
    with store.create_session("s") as session:
        for refuse in (lambda: session.append(["not", "a", "dict"]),
                       lambda: session.set_state(1, "key not a str"),
                       lambda: session.update_metadata(title=5)):
            try:
                refuse()
            except ValueError as exc:
                assert isinstance(exc, fsstore.InvalidInput)
            else:
                raise AssertionError("not refused")


def test_a_seq_argument_no_session_can_have_is_refused_input_and_still_out_of_range(store):
    with store.create_session("s") as session:
        session.append({"n": 1})
        for seq in (-1, "1", True, 1.0):
            with pytest.raises(fsstore.InvalidSeq) as caught:
                session.state_at(seq)
            assert isinstance(caught.value, fsstore.InvalidInput)
            assert isinstance(caught.value, fsstore.SeqOutOfRange)
        for arguments in ({"after_seq": -1}, {"until_seq": 1.5}):
            with pytest.raises(fsstore.InvalidSeq):
                session.events(**arguments)
        with pytest.raises(fsstore.InvalidSetting, match="limit"):
            session.events(limit=-1)
        with pytest.raises(fsstore.InvalidSeq, match="at_seq"):
            store.fork_session("s", "c", at_seq=-1)


def test_a_bad_number_of_seconds_for_the_queue_is_a_refused_setting(store):
    with store.create_session("s") as session:
        for call in (lambda: session.queue.claim("w", lease_ttl=-1),
                     lambda: session.inputs.prune(-5)):
            with pytest.raises(fsstore.InvalidSetting, match="seconds"):
                call()
