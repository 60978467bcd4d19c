"""Reply understanding beyond the shared corpus: other phrasings, languages, clients and MIME.

Messages are written out as raw bytes the way the named client sends them, so each test also
exercises header and MIME decoding, not only the classifier.
"""

from __future__ import annotations

import base64
import quopri
import time

import pytest

from service.inbox.quotes import html_to_text, new_text, unflow
from service.inbox.replies import Judgement, Reply, judge, parse
from service.inbox.verdicts import classify

ALICE = "alice@example.com"
QUOTE = (
    "> Summary: Example Corp sells three plans.\n"
    ">\n"
    "> Reply YES to approve or NO to reject. You can add a reason after NO.\n"
)


def message(
    body: str | bytes,
    *headers: str,
    sender: str = f"Alice Martin <{ALICE}>",
    content_type: str = 'text/plain; charset="utf-8"',
    encoding: str = "8bit",
) -> bytes:
    """A raw message: From, the given headers, a single body part."""
    lines = [
        f"From: {sender}",
        "To: reply+token@mailgate.test",
        "Subject: Re: [Mailgate] Approve summary",
        "Message-ID: <reply-1@example.com>",
        "MIME-Version: 1.0",
        f"Content-Type: {content_type}",
        f"Content-Transfer-Encoding: {encoding}",
        *headers,
    ]
    data = body.encode() if isinstance(body, str) else body
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + data


def alternative(plain: str, html: str, *, charset: str = "utf-8") -> bytes:
    boundary = "b1_alt"
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset={charset}\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        f"{quopri.encodestring(plain.encode(charset)).decode()}\r\n"
        f"--{boundary}\r\nContent-Type: text/html; charset={charset}\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        f"{quopri.encodestring(html.encode(charset)).decode()}\r\n"
        f"--{boundary}--\r\n"
    )
    return message(body, content_type=f'multipart/alternative; boundary="{boundary}"')


def decided(raw: bytes, **kwargs: str) -> Judgement:
    return judge(parse(raw, **kwargs), approver=ALICE)


# --- what the opening means ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Yes",
        "yes!!",
        "Y",
        "k",
        "Yep, ship it.",
        "Yeah sure",
        "Sure thing.",
        "OK 👍",
        "Okay, go ahead.",
        "👍🏽",
        "✅",
        "+1",
        "Approved, thanks!",
        "Approved by me.",
        "I approve.",
        "We approve this summary.",
        "This is approved.",
        "It's fine.",
        "That's fine by me.",
        "Looks good to me, ship it!",
        "LGTM",
        "Sounds great.",
        "Please go ahead and publish.",
        "Happy to approve.",
        "Good to go",
        "No objections.",
        "No concerns, approved.",
        "No worries, go ahead.",
        "Absolutely, go for it.",
        "Hello Mailgate team,\n\nyes, approved.\n\nBest,\nAlice",
        "Hi Alice, yes please",
        "Ja, passt.",
        "Ja, freigegeben.",
        "Einverstanden.",
        "Sieht gut aus!",
        "Kein Problem, genehmigt.",
        "Oui, c'est bon.",
        "D'accord, vas-y.",
        "Validé.",
        "Sí, adelante.",
        "Vale, de acuerdo.",
        "Aprobado 👍",
        "Ja hoor, akkoord.",
        "Prima, ga je gang.",
        "Ziet er goed uit.",
        "Sim, aprovado.",
        "Pode seguir, tudo certo.",
        "Não há problema, pode publicar.",
        "Perfeito!",
        "Sì, va bene.",
        "YES 🎉🎉",
        "Ja, gerne 😊",
        "Approve the summary",
        "Publish the page.",
        "No changes, publish it",
        "Nothing to change, approved.",
        "Ok pour moi.",
        "Ja hoor.",
        "Approved from my side.",
    ],
)
def test_approvals(text: str) -> None:
    assert classify(text) == ("approve", None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("No", None),
        ("no.", None),
        ("N", None),
        ("NOPE", None),
        ("Nah, too long.", "too long."),
        ("No way, the prices are from 2023.", "the prices are from 2023."),
        ("No thank you.", None),
        ("Declined - the intro is wrong.", "the intro is wrong."),
        ("Denied.", None),
        ("I reject this: wrong page.", "wrong page."),
        ("Absolutely not.", None),
        ("Not really, it misses the discount.", "it misses the discount."),
        ("This is not approved, fix the title.", "fix the title."),
        ("I can't approve this, the plan names changed.", "the plan names changed."),
        ("Please don't publish this, it is outdated.", "it is outdated."),
        ("Do not send it. The prices are old.", "The prices are old."),
        ("Sorry, no. Needs the SLA.", "Needs the SLA."),
        ("Unfortunately no - missing VAT.", "missing VAT."),
        ("I don't think so.", None),
        ("The price is wrong, so no.", "The price is wrong, so no."),
        ("No\nthe price is wrong", "the price is wrong"),
        ("No:\n- fix the price\n- mention SSO", "- fix the price\n- mention SSO"),
        ("No.\nThanks, but the tone is off.", "but the tone is off."),
        ("No. Warning: the page moved.", "Warning: the page moved."),
        ("-1, off topic", "off topic"),
        ("❌ wrong product", "wrong product"),
        ("👎🏻", None),
        ("Nein, bitte kürzer.", "bitte kürzer."),
        ("Abgelehnt: falscher Preis.", "falscher Preis."),
        ("Nicht freigegeben, der Preis fehlt.", "der Preis fehlt."),
        ("Non merci, trop long.", "merci, trop long."),
        ("Je n'approuve pas, le prix est faux.", "le prix est faux."),
        ("Pas d'accord : le ton est trop commercial.", "le ton est trop commercial."),
        ("No, falta el precio.", "falta el precio."),
        ("Rechazado. Demasiado largo.", "Demasiado largo."),
        ("Nee, te lang.", "te lang."),
        ("Niet akkoord, de prijs klopt niet.", "de prijs klopt niet."),
        ("Não, falta o desconto.", "falta o desconto."),
        ("Nao. Texto longo demais.", "Texto longo demais."),
        ("Reprovado: preço errado.", "preço errado."),
        (
            "No, see https://example.com/pricing?plan=team for the prices.",
            "see https://example.com/pricing?plan=team for the prices.",
        ),
    ],
)
def test_rejections_keep_the_reason(text: str, reason: str | None) -> None:
    assert classify(text) == ("reject", reason)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n",
        "Thanks!",
        "Cheers",
        "🤔",
        "Got it, thanks.",
        "Yes, it arrived.",
        "OK, so the prices are wrong.",
        "Ok, I'll take a look",
        "Yes, but fix the title first.",
        "Approve if the price is right.",
        "Approved in principle.",
        "Approved - but next time shorter.",
        "Yes and no.",
        "Ja und nein.",
        "Oui et non.",
        "Sim e não",
        "Yes or no?",
        "Yes? No?",
        "Should I approve this?",
        "Can you approve it for me?",
        "Maybe.",
        "Probably not.",
        "Not yet.",
        "Not sure, let me think.",
        "I think so",
        "I'll approve it tomorrow.",
        "Yes, I will read everything when I'm back.",
        "Hold on, the price changed.",
        "Let's discuss it on Monday.",
        "No problem",
        "No idea what this is.",
        "I don't reject it.",
        "Yes.\n\nActually no, the price is wrong.",
        "Approved.\n\nNo wait, not this one.",
        "Great",
        "Approved senders get an answer within one working day.",
        'Reply "yes" to approve or "no" to reject.',
        "Reply YES to this email within 24 hours to claim it.",
        "https://mailgate.test/decide/7Kq2mX9pLr?a=approve&s=3f9a1c0e52b7d4",
        "Really?? yes",
        "Approving this would be premature.",
        "LGTM but wait for Bob",
        "Yes - pending legal review.",
        "Vielleicht später.",
        "Noch nicht.",
        "Peut-être.",
        "Pas encore.",
        "Quizás mañana.",
        "Todavía no.",
        "Misschien.",
        "Nog niet.",
        "Talvez.",
        "Ainda não.",
        "Oui, si le prix est correct.",
        "Not approved yet, waiting for finance.",
        "Noch nicht freigegeben.",
        "Yes 🤔",
        "Approve link is broken.",
        "OK button is greyed out",
        "No, it's fine",
        "Nee, prima zo",
        "yes\x00\x01\x02",
        "Yes \ufffd\ufffd",
    ],
)
def test_mixed_conditional_deferring_questioning_or_empty_answers_decide_nothing(
    text: str,
) -> None:
    assert classify(text) == ("unclear", None)


def test_the_decision_comes_from_the_opening_not_from_later_text() -> None:
    long_approval = "Approved.\n\n" + "\n".join(f"line {n}: unchanged" for n in range(3000))
    late_yes = "Thanks for this.\nI had a look.\nThe numbers match.\nThe tone is fine.\nYes."
    assert classify(long_approval) == ("approve", None)
    assert classify(late_yes) == ("unclear", None)


def test_a_wrapped_line_does_not_split_a_negation_from_its_yes() -> None:
    text = (
        "I went through the whole summary twice this morning and I really can't say\n"
        "yes to this one, the prices are out of date."
    )
    verdict, reason = classify(text)
    assert verdict == "reject"
    assert reason == "the prices are out of date."


# --- the new text only --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attribution",
    [
        "On Tue, Nov 24, 2026 at 10:02 AM Mailgate <mailgate@mailgate.test> wrote:",
        "On Tue, Nov 24, 2026 at 10:02 AM Mailgate <\nmailgate@mailgate.test> wrote:",
        "Am Di., 24. Nov. 2026 um 11:02 Uhr schrieb Mailgate <mailgate@mailgate.test>:",
        "Mailgate <mailgate@mailgate.test> schrieb am Di., 24. Nov. 2026, 11:02:",
        "Le mar. 24 nov. 2026 à 11:02, Mailgate <mailgate@mailgate.test> a écrit :",
        "El mar, 24 nov 2026 a las 11:02, Mailgate (<mailgate@mailgate.test>) escribió:",
        "Op di 24 nov 2026 om 11:02 schreef Mailgate <mailgate@mailgate.test>:",
        "Em ter., 24 de nov. de 2026 às 11:02, Mailgate <mailgate@mailgate.test> escreveu:",
        "Il giorno mar 24 nov 2026 alle ore 11:02 Mailgate <mailgate@mailgate.test> ha scritto:",
        "Den tis 24 nov. 2026 kl 11:02 skrev Mailgate <mailgate@mailgate.test>:",
        "Quoting Mailgate <mailgate@mailgate.test>:",
        "Mailgate <mailgate@mailgate.test> wrote on 24.11.2026 10:02:02:",
        "Le mar. 24 nov. 2026 à 11:02, Mailgate <\nmailgate@mailgate.test> a écrit :",
        "Mailgate wrote:",
    ],
)
def test_attribution_lines_in_many_languages_are_not_new_text(attribution: str) -> None:
    body = f"No, the page moved.\n\n{attribution}\n{QUOTE}"
    assert new_text(body) == "No, the page moved."


def test_an_answer_typed_under_the_quote_is_the_new_text() -> None:
    body = f"Em 24/11/2026 11:02, Mailgate escreveu:\n{QUOTE}\nNão, falta o plano Team.\n"
    assert new_text(body) == "Não, falta o plano Team."


def test_answers_typed_between_quoted_lines_are_kept_in_order() -> None:
    body = (
        "On 24/11/2026 10:02, Mailgate wrote:\n"
        "> Summary: Example Corp sells three plans.\n\n"
        "No. The Team plan is $89 now.\n\n"
        "> Reply YES to approve or NO to reject.\n\n"
        "And mention the trial.\n"
    )
    verdict, reason = classify(new_text(body))
    assert verdict == "reject"
    assert reason == "The Team plan is $89 now.\n\nAnd mention the trial."


def test_yes_only_inside_the_quote_is_no_answer() -> None:
    body = f"On Tue, Nov 24, 2026 at 10:02 AM Mailgate <mailgate@mailgate.test> wrote:\n{QUOTE}"
    assert new_text(body) == ""
    assert decided(message(body)) == Judgement("none", "unclear", None)


@pytest.mark.parametrize(
    "history",
    [
        "From: Mailgate <mailgate@mailgate.test>\nSent: Tuesday, November 24, 2026 10:02 AM\n"
        "To: Alice Martin <alice@example.com>\nSubject: [Mailgate] Approve summary",
        "Von: Mailgate <mailgate@mailgate.test>\nGesendet: Dienstag, 24. November 2026 11:02\n"
        "An: Alice Martin\nBetreff: [Mailgate] Approve summary",
        "De : Mailgate <mailgate@mailgate.test>\nEnvoyé : mardi 24 novembre 2026 11:02\n"
        "À : Alice Martin\nObjet : [Mailgate] Approve summary",
        "De: Mailgate <mailgate@mailgate.test>\nEnviado el: martes, 24 de noviembre de 2026\n"
        "Para: Alice Martin\nAsunto: [Mailgate] Approve summary",
        "Van: Mailgate <mailgate@mailgate.test>\nVerzonden: dinsdag 24 november 2026 11:02\n"
        "Aan: Alice Martin\nOnderwerp: [Mailgate] Approve summary",
        "De: Mailgate <mailgate@mailgate.test>\nEnviada em: terça-feira, 24 de novembro\n"
        "Para: Alice Martin\nAssunto: [Mailgate] Approve summary",
        "*From:* Mailgate <mailgate@mailgate.test>\n*Sent:* Tuesday, November 24, 2026\n"
        "*To:* Alice Martin\n*Subject:* [Mailgate] Approve summary",
        "-----Ursprüngliche Nachricht-----\nVon: Mailgate",
        "-----Mensagem original-----\nDe: Mailgate",
        "________________________________\nFrom: Mailgate <mailgate@mailgate.test>",
        "---------- Forwarded message ---------\nFrom: Mailgate",
        "---------- Mensaje reenviado ---------\nDe: Mailgate",
        "----- Original Message -----\nFrom: Mailgate\nSent: Tuesday",
        "------- Original Message -------\nOn Tuesday, November 24th, 2026, Mailgate wrote:",
        "Begin forwarded message:\n\nFrom: Mailgate",
        "Início da mensagem encaminhada:\n\nDe: Mailgate",
    ],
)
def test_unquoted_history_below_a_header_block_or_separator_is_cut(history: str) -> None:
    body = f"No - the SSO line is wrong.\n\n{history}\n\nReply YES to approve or NO to reject.\n"
    assert new_text(body) == "No - the SSO line is wrong."


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Yes.\n\n-- \nAlice Martin\nYes We Can Consulting", "Yes."),
        ("No, wrong page.\n--\nAlice", "No, wrong page."),
        ("No, wrong page.\n\nSent from my iPhone", "No, wrong page."),
        ("No, wrong page.\n\nVon meinem iPhone gesendet", "No, wrong page."),
        ("No, wrong page.\n\nEnviado do meu iPhone", "No, wrong page."),
        ("No, wrong page.\n\nGet Outlook for Android", "No, wrong page."),
        ("No, wrong page.\n\nThanks,\nAlice", "No, wrong page."),
        ("No, wrong page.\n\nViele Grüße\nAlice", "No, wrong page."),
        ("No, wrong page.\n\nObrigada,\nAlice", "No, wrong page."),
        ("No, wrong page.\n\nMet vriendelijke groet,\nAlice Martin", "No, wrong page."),
        ("No, wrong page.\n\nAlice Martin\nHead of Marketing", "No, wrong page."),
        ("No, wrong page.\n\n- Alice", "No, wrong page."),
        ("No, wrong page.\n[cid:image001.png@01DB5E2A.3C4F7B10]", "No, wrong page."),
        ("No:\n- fix the price\n- add SSO", "No:\n- fix the price\n- add SSO"),
        ("No.\nThanks, but the tone is off.", "No.\nThanks, but the tone is off."),
        ("Thanks!\n\nApproved.", "Thanks!\n\nApproved."),
    ],
)
def test_signatures_are_cut_and_reasons_kept(body: str, expected: str) -> None:
    assert new_text(body, names=("Alice Martin", "Alice")) == expected


def test_the_senders_own_name_ends_the_new_text_before_a_disclaimer() -> None:
    raw = message(
        "Yes.\n\nAlice Martin\nHead of Marketing\n\nThis e-mail is confidential. If you are "
        "not the intended recipient, do not copy it. No contract can be concluded by e-mail.\n"
    )
    assert parse(raw).text == "Yes."


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (  # Gmail web
            '<div dir="ltr">No, wrong plan.</div><br><div class="gmail_quote">'
            '<div class="gmail_attr">On Tue, Nov 24, 2026 at 10:02 AM Mailgate wrote:<br></div>'
            '<blockquote class="gmail_quote"><p>Reply <b>YES</b> to approve</p></blockquote></div>',
            "No, wrong plan.",
        ),
        (  # Gmail with its signature block
            '<div dir="ltr">Approved.<br clear="all"><div><br></div><span>-- </span><br>'
            '<div class="gmail_signature">Alice Martin<br>Example Corp</div></div>',
            "Approved.",
        ),
        (  # Yahoo
            '<div>Nope, old prices.</div><div class="yahoo_quoted"><div>On Tuesday, Mailgate '
            "wrote:</div><div>Reply YES to approve</div></div>",
            "Nope, old prices.",
        ),
        (  # Proton Mail
            '<div>No, wrong.</div><div class="protonmail_quote">------- Original Message -------'
            "<br>On Tuesday, November 24th, 2026 at 10:02, Mailgate &lt;m@x&gt; wrote:<br>"
            '<blockquote class="protonmail_quote" type="cite">Reply YES</blockquote></div>',
            "No, wrong.",
        ),
        (  # Outlook on the web
            '<div>Not approved, the logo is wrong.</div><div id="appendonsend"></div><hr>'
            '<div id="divRplyFwdMsg"><b>From:</b> Mailgate<br><b>Sent:</b> Tuesday</div>'
            "<div>Reply YES to approve</div>",
            "Not approved, the logo is wrong.",
        ),
        (  # Thunderbird, bottom-posted
            '<div class="moz-cite-prefix">On 24/11/2026 10:02, Mailgate wrote:<br></div>'
            '<blockquote type="cite">Reply YES to approve or NO to reject.</blockquote>'
            "<p>No, please add the Team plan.</p>",
            "No, please add the Team plan.",
        ),
        (  # Apple Mail, inline answer between two blockquotes
            '<div>On 24 Nov 2026, at 10:02, Mailgate wrote:</div><blockquote type="cite">'
            'Summary</blockquote><div>Yes</div><blockquote type="cite">Reply YES</blockquote>',
            "Yes",
        ),
        (  # Outlook desktop: style, comments and conditional markup
            "<html><head><style>p {margin:0}</style></head><body><!--[if gte mso 9]><xml>"
            "</xml><![endif]--><p class=MsoNormal>Reject<o:p></o:p></p><p>&nbsp;</p>"
            '<div style="border-top:solid #E1E1E1 1.0pt"><p><b>From:</b> Mailgate<br>'
            "<b>Sent:</b> Tuesday<br><b>To:</b> Alice<br><b>Subject:</b> Approve</p></div>"
            "<p>Reply YES to approve</p></body></html>",
            "Reject",
        ),
    ],
)
def test_html_replies_keep_only_the_new_text(html: str, expected: str) -> None:
    assert new_text(html_to_text(html), names=("Alice Martin", "Alice")) == expected


def test_html_that_is_not_html_reads_as_nothing() -> None:
    assert html_to_text("") == ""
    assert html_to_text('<?xml version="1.0" encoding="utf-8"?><p>Yes</p>') == "Yes"
    assert html_to_text("Yes\x00\x01") == "Yes\ufffd\ufffd"


def test_format_flowed_soft_breaks_are_joined() -> None:
    flowed = "I can't say \r\nyes to this one.\r\n\r\n> quoted \r\n> text\r\n-- \r\nAlice"
    assert (
        unflow(flowed, delsp=False) == "I can't say yes to this one.\n\n> quoted text\n-- \nAlice"
    )
    assert unflow("Appro \r\nved", delsp=True) == "Approved"


# --- MIME shapes and charsets -------------------------------------------------------------------


def test_quoted_printable_base64_and_flowed_bodies_are_decoded() -> None:
    qp = quopri.encodestring("Não, o preço mudou.\n".encode()).decode()
    b64 = base64.b64encode("👎 wrong currency\n".encode()).decode()
    flowed = "No, the trial is \r\n30 days.\r\n"
    flowed_type = 'text/plain; charset="utf-8"; format=flowed'
    assert parse(message(qp, encoding="quoted-printable")).reason == "o preço mudou."
    assert parse(message(b64, encoding="base64")).reason == "wrong currency"
    assert parse(message(flowed, content_type=flowed_type)).reason == "the trial is 30 days."


@pytest.mark.parametrize(
    ("label", "payload", "expected"),
    [
        ("iso-8859-1", "Nein, schöne Grüße fehlen.".encode("latin-1"), "schöne Grüße fehlen."),
        ("iso-8859-1", "No – the “Starter” plan".encode("cp1252"), "the “Starter” plan"),
        ("us-ascii", "Não, o preço".encode(), "o preço"),
        ("x-unknown-42", "Nee, één alinea".encode(), "één alinea"),
        ("utf-8", "No – “Starter” is $29".encode("cp1252"), "“Starter” is $29"),
        ("", "No, café".encode("latin-1"), "café"),
    ],
)
def test_wrong_missing_or_unknown_charsets_still_decode(
    label: str, payload: bytes, expected: str
) -> None:
    content_type = f"text/plain; charset={label}" if label else "text/plain"
    reply = parse(message(payload, content_type=content_type))
    assert reply.verdict == "reject"
    assert reply.reason == expected


def test_multipart_alternative_prefers_the_plain_part_and_falls_back_to_html() -> None:
    both = alternative("Yes\n", "<div>No</div>")
    empty_plain = alternative(
        f"On Tue, Nov 24, 2026, Mailgate <m@mailgate.test> wrote:\n{QUOTE}", "<div>No, old.</div>"
    )
    assert parse(both).verdict == "approve"
    assert parse(empty_plain).reason == "old."


def test_attachments_and_forwarded_messages_are_not_the_answer() -> None:
    body = (
        "--mixed\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Let me check with finance.\r\n"
        "--mixed\r\nContent-Type: text/plain; charset=utf-8\r\n"
        'Content-Disposition: attachment; filename="notes.txt"\r\n\r\nYes, approved.\r\n'
        "--mixed\r\nContent-Type: message/rfc822\r\n\r\n"
        "From: bob@example.com\r\nSubject: fwd\r\n\r\nYes\r\n"
        "--mixed--\r\n"
    )
    reply = parse(message(body, content_type='multipart/mixed; boundary="mixed"'))
    assert reply.text == "Let me check with finance."
    assert reply.verdict == "unclear"


def test_html_only_reply_in_windows_1252() -> None:
    html = "<p>No – the “Team” plan is $89.</p><blockquote>Reply YES</blockquote>"
    raw = message(html.encode("cp1252"), content_type="text/html; charset=windows-1252")
    assert parse(raw).reason == "the “Team” plan is $89."


# --- headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("Alice Martin <alice@example.com>", ALICE),
        ("ALICE@EXAMPLE.COM", ALICE),
        ("=?utf-8?q?Alice_Mart=C3=ADn?= <Alice@Example.com>", ALICE),
        ("alice@example.com (Alice)", ALICE),
        ('"alice@example.com" <mallory@evil.test>', "mallory@evil.test"),
        ("alice@example.com <mallory@evil.test>", None),
        ("Alice <alice@example.com>, Bob <bob@example.com>", None),
        ("=?utf-8?q?alice@example.com?=", None),
        ("undisclosed-recipients:;", None),
        ("<>", None),
        ("not an address", None),
        ("alice@", None),
    ],
)
def test_sender_is_the_single_bare_from_address(sender: str, expected: str | None) -> None:
    assert parse(message("Yes", sender=sender)).sender == expected


def test_two_from_headers_have_no_sender() -> None:
    raw = message("Yes", "From: Alice Martin <alice@example.com>", sender="mallory@evil.test")
    assert parse(raw).sender is None


def test_threading_headers_are_read() -> None:
    raw = message(
        "Yes",
        "In-Reply-To: <request-1@mailgate.test>",
        "References: <a@x.test>\r\n <request-1@mailgate.test>",
    )
    reply = parse(raw)
    assert reply.message_id == "<reply-1@example.com>"
    assert reply.in_reply_to == "<request-1@mailgate.test>"
    assert reply.references == ("<a@x.test>", "<request-1@mailgate.test>")


# --- machines -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "sender", "envelope", "auto"),
    [
        (("Auto-Submitted: auto-replied",), ALICE, None, "Auto-Submitted: auto-replied"),
        (
            ("Auto-Submitted: Auto-Generated; owner=x",),
            ALICE,
            None,
            "Auto-Submitted: auto-generated",
        ),
        (("X-Autoreply: yes",), ALICE, None, "X-Autoreply"),
        (("X-Autorespond: away",), ALICE, None, "X-Autorespond"),
        (("Precedence: bulk",), ALICE, None, "Precedence: bulk"),
        (("Precedence: JUNK",), ALICE, None, "Precedence: junk"),
        (("Precedence: auto_reply",), ALICE, None, "Precedence: auto_reply"),
        (("Precedence: list",), ALICE, None, "Precedence: list"),
        (("List-Id: <team.example.com>",), ALICE, None, "List-Id"),
        (("List-Unsubscribe: <mailto:u@x.test>",), ALICE, None, "List-Unsubscribe"),
        (("X-Failed-Recipients: alice@example.com",), ALICE, None, "X-Failed-Recipients"),
        ((), ALICE, "", "empty sender"),
        ((), ALICE, "<>", "empty sender"),
        ((), "MAILER-DAEMON@mx.example.com", ALICE, "MAILER-DAEMON"),
        ((), ALICE, "postmaster@example.com", "MAILER-DAEMON"),
        (("Auto-Submitted: no",), ALICE, ALICE, None),
        (("X-Autoreply: no",), ALICE, ALICE, None),
        (("Precedence: first-class",), ALICE, ALICE, None),
    ],
)
def test_machines_are_recognised(
    headers: tuple[str, ...], sender: str, envelope: str | None, auto: str | None
) -> None:
    reply = parse(message("Yes", *headers, sender=sender), envelope_sender=envelope)
    assert reply.auto == auto


@pytest.mark.parametrize("report_type", ["delivery-status", "disposition-notification"])
def test_delivery_and_read_reports_are_automatic(report_type: str) -> None:
    body = (
        "--r\r\nContent-Type: text/plain\r\n\r\nYes, your message was read.\r\n"
        f"--r\r\nContent-Type: message/{report_type}\r\n\r\nFinal-Recipient: rfc822; a@b\r\n"
        "--r--\r\n"
    )
    content_type = f'multipart/report; report-type={report_type}; boundary="r"'
    reply = parse(message(body, content_type=content_type))
    assert reply.auto == "multipart/report"
    assert judge(reply, approver=ALICE) == Judgement("none", "auto-reply", None)


# --- who may decide -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        "bob@example.com",
        "alice@examp1e.com",
        "alice@example.com.evil.test",
        "alice@mail.example.com",
        "alice+mailgate@example.com",
        "alice@example.co",
        "аlice@example.com",  # Cyrillic а
        "alice@exаmple.com",  # Cyrillic а in the domain
        "alice@ｅxample.com",  # fullwidth e
        "alıce@example.com",  # dotless ı
    ],
)
def test_only_the_approver_decides_and_look_alikes_are_refused(sender: str) -> None:
    assert decided(message("Yes", sender=sender)) == Judgement("none", "wrong-sender", None)


def test_approver_match_ignores_case_and_display_names_on_both_sides() -> None:
    reply = parse(message("Yes", sender="ALICE <Alice@Example.COM>"))
    assert judge(reply, approver="Alice Martin <ALICE@example.com>").decision == "approve"


def test_kelvin_sign_is_not_a_k() -> None:
    reply = parse(message("Yes", sender="\u212arin@example.com"))
    assert judge(reply, approver="krin@example.com").why == "wrong-sender"


def test_automatic_replies_from_the_approver_never_decide() -> None:
    raw = message("Yes, approved.", "Auto-Submitted: auto-replied")
    assert decided(raw) == Judgement("none", "auto-reply", None)


def test_judgement_carries_the_reason_only_for_a_rejection() -> None:
    assert decided(message("No - too long")) == Judgement("reject", "reject", "too long")
    assert decided(message("Approved")) == Judgement("approve", "approve", None)
    assert decided(message("Maybe")) == Judgement("none", "unclear", None)


# --- hostile input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe",
        b"From: alice@example.com",
        b"From: alice@example.com\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
        b'Content-Type: text/plain; charset="\x00"\r\n\r\nYes',
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!",
        b"Content-Type: text/html\r\n\r\n<<<<>>>><html><body><p>",
        b"Content-Type: multipart/alternative\r\n\r\nno boundary at all",
        b"From: =?x-unknown?b?////?= <alice@example.com>\r\n\r\nYes",
    ],
)
def test_malformed_messages_parse_without_raising(raw: bytes) -> None:
    reply = parse(raw)
    assert isinstance(reply, Reply)
    assert judge(reply, approver=ALICE).decision in {"approve", "none"}


def test_crafted_header_like_lines_are_cheap() -> None:
    """mail-parser-reply's header patterns backtrack for minutes on one long "From:" line, and a
    pasted 8 MB log must not take seconds either."""
    bodies = [
        "Yes\n\nFrom:" + " " * 50_000 + "x",
        "Yes\n\n" + "From:" + "* " * 20_000,
        "Yes\n\n" + "\n".join(["On " + "a " * 98] * 2_000),
        "Yes\n\n" + ("From: " + "x" * 195 + "\nzz\n") * 2_000,
        "Yes\n\n" + "2024-10-01 starter $15 team $69 unchanged\n" * 200_000,
    ]
    for body in bodies:
        started = time.perf_counter()
        reply = parse(message(body))
        assert time.perf_counter() - started < 2
        assert reply.verdict == "approve"
