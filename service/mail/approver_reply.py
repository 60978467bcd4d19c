"""The reply an approver's mail client would send: for ``mailgate reply-test``.

It quotes the request the way mail clients do ("On … wrote:" and ``>`` lines), so trying
"reply to decide" locally exercises the same parsing a real reply goes through.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

from service.mail.compose import message_id_for, request_subject
from service.reply_tokens import mint_reply_token


def compose_reply(
    view: dict[str, Any],
    round_: dict[str, Any],
    *,
    answer: str,
    secrets: Sequence[str],
    reply_domain: str,
    our_sender: str,
    now: datetime,
) -> EmailMessage:
    token = mint_reply_token(round_["round_id"], secrets=secrets, now=int(now.timestamp() * 1000))
    request_id = message_id_for(round_["round_id"], parseaddr(our_sender)[1].rpartition("@")[2])
    message = EmailMessage()
    message["From"] = view["approver"]
    message["To"] = f"reply+{token}@{reply_domain}"
    message["Subject"] = f"Re: {request_subject(view['url'], round_['number'])}"
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("reply-test")
    message["In-Reply-To"] = request_id
    message["References"] = request_id
    quoted = "\n".join(f"> {line}" for line in round_["summary"].splitlines())
    message.set_content(f"{answer}\n\nOn {format_datetime(now)}, {our_sender} wrote:\n{quoted}\n")
    return message
