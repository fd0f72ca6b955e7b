# SPDX-License-Identifier: MIT
"""Status that people set through the API client against a real presenced:
availability, the status message, devices from the token's claim, their
events; refusals as typed errors."""
import threading

import pytest

from presenced import PresenceError
from conftest import User, wait_for


def test_availability_message_devices(presenced, api):
    stream = api.events()
    items = []
    threading.Thread(target=lambda: items.extend(stream), daemon=True).start()
    wait_for(lambda: stream.connects == 1, what="stream")
    phone = User(presenced, "gina", device="mobile")
    wait_for(lambda: api.get_user("gina")["status"] == "online", what="gina online")
    assert list(api.get_user("gina")["devices"]) == ["mobile"]
    assert api.set_availability("gina", "dnd") == {"user_id": "gina", "availability": "dnd"}
    assert api.set_message("gina", "Lunch", emoji="🥪", expires_in_s=1800)["message"]["text"] == "Lunch"
    u = api.get_user("gina")
    assert (u["availability"], u["message"]["emoji"]) == ("dnd", "🥪")
    api.clear_message("gina")
    assert api.get_user("gina")["message"] is None
    with pytest.raises(PresenceError) as e:
        api.set_availability("gina", "asleep")
    assert e.value.code == "bad_availability"
    with pytest.raises(PresenceError) as e:
        api.set_message("gina", "x" * 500)
    assert e.value.code == "bad_message"
    wait_for(lambda: sum(i.type == "user.message" for i in items) == 2, what="message events")
    stream.close()
    phone.close()
    kinds = [i.type for i in items if i.data.get("user_id") == "gina" and i.type.startswith("user.")]
    assert kinds[:4] == ["user.online", "user.availability", "user.message", "user.message"]


def test_event_stream_filters_by_type(presenced, api):
    only = api.events(types=["user.availability"])
    items = []
    threading.Thread(target=lambda: items.extend(only), daemon=True).start()
    wait_for(lambda: only.connects == 1, what="stream")
    api.set_availability("hal", "away")
    u = User(presenced, "hal")
    api.set_availability("hal", "dnd")
    wait_for(lambda: len(items) >= 2, what="two availability events")
    only.close()
    u.close()
    assert [(i.type, i.data["to"]) for i in items[:2]] == [("user.availability", "away"), ("user.availability", "dnd")]
    with pytest.raises(PresenceError) as e:
        next(iter(api.events(types="bogus")))
    assert e.value.code == "bad_request"
