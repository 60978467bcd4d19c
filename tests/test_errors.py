"""Errors cross the SDK's durability boundary pickled: they must come back saying the same."""

from __future__ import annotations

import pickle

import pytest

from service.errors import (
    BadToken,
    BlockedUrl,
    DeliveryRejected,
    ExpiredToken,
    FetchFailed,
    HostNotFound,
    UnusablePage,
)
from service.steps.callback import CallbackFailed
from service.steps.summarize import EmptySummary


@pytest.mark.parametrize(
    "error",
    [
        HostNotFound("example.invalid"),
        BlockedUrl("refusing to fetch 10.0.0.1: a private address"),
        UnusablePage("not an HTML page"),
        FetchFailed("could not fetch from h after 4 attempts"),
        DeliveryRejected("550 no such user"),
        ExpiredToken(1_800_000_000),
        BadToken("this decision link is not valid"),
        CallbackFailed("callback failed"),
        EmptySummary("the model returned nothing"),
    ],
)
def test_errors_survive_pickling(error: Exception):
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert vars(again) == vars(error)
