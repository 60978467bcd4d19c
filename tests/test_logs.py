"""JSON logs keep structured fields and never carry more than they were given."""

from __future__ import annotations

import json
import logging

from service.logs import JsonFormatter


def test_json_lines_keep_event_fields():
    record = logging.LogRecord("service.inbox", logging.INFO, __file__, 1, "reply %s", ("x",), None)
    record.event = "reply"
    record.outcome = "decided: approve"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "reply x"
    assert line["level"] == "info"
    assert line["event"] == "reply"
    assert line["outcome"] == "decided: approve"
    assert line["ts"].endswith("Z")
