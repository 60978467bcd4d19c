"""The person's new text: what they typed, without the quoted history or their signature.

mail-parser-reply knows where an unquoted original begins — Outlook's "From:/Sent:" block in a
dozen languages, "-----Original Message-----" — and cutting there is its job here. It reads a
reply as "the text above the first header", though, so an answer typed between or under
`>`-quoted lines comes back as the quote itself; it has no Portuguese; and its signature and
disclaimer rules drop reasons that begin with "Thanks," or "Warning:". So, in order:

1. `>`-quoted lines and the attribution lines that introduce them ("On … wrote:", "Am … schrieb
   …:", "Em … escreveu:") are dropped, keeping whatever was typed between and under them, and
   forward/original-message separators, phone signatures and header blocks the library misses
   (Portuguese "De:/Enviada em:") end the new text;
2. mail-parser-reply's header-block patterns cut at the first unquoted original (only those
   patterns are used: its "wrote:" patterns span lines and its whole-message reader can take
   minutes on crafted input, see HEADER_LINE_CHARS);
3. a signature is cut by narrow rules: "-- ", a closing line ("Thanks,", "Groeten,"), or a line
   that is the sender's own name.

HTML is turned into the same plain text first, with each quoting container (`blockquote`,
Gmail's `gmail_quote`, Yahoo's `yahoo_quoted`) replaced by one `>` line so that step 1 treats it
like any other quote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lxml import etree
from lxml import html as lxml_html
from mailparser_reply.constants import GENERIC_MAIL_SEPARATOR, MAIL_LANGUAGES

HEADER_LANGUAGES = tuple(lang for lang in MAIL_LANGUAGES if lang not in {"pl", "david"})
"""mail-parser-reply's languages for header blocks. Polish takes a single "Do:" or "Data:" line
for a header, which cuts ordinary sentences; "david" is one vendor's format."""

HEADER_SEARCH_LINES = 400
HEADER_LINE_CHARS = 160
"""Bounds on what the header patterns see. They backtrack badly on long runs of spaces (a line of
"From:" and 50,000 spaces takes minutes in ``EmailMessage.read``), so they get at most this many
lines, each stripped, cut short, and with runs of blanks and stars squeezed to one space."""

_HEADER_BLOCK = re.compile(
    "|".join(
        [f"(?:{MAIL_LANGUAGES[lang]['from_header']})" for lang in HEADER_LANGUAGES]
        + [f"(?:{GENERIC_MAIL_SEPARATOR})"]
    ),
    re.MULTILINE | re.IGNORECASE,
)
_BLANK_RUN = re.compile(r"[ \t*]{3,}")

_MAX_ATTRIBUTION_LINES = 3
_MAX_ATTRIBUTION_CHARS = 400
_QUOTE_MARK = ">"

_QUOTED = re.compile(r"^\s*>")
_NAME = r"(?-i:[A-ZÀ-Þ][\w.'-]*(?:[ \t]+[A-ZÀ-Þ][\w.'-]*){0,2})"
"""Up to three capitalized words."""
_SIGNATURE_DASHES = re.compile(rf"^(?:--|—|–)[ \t]*{_NAME}?[ \t]*$")
_ATTRIBUTION_VERB = re.compile(
    r"""\b(?:wrote|writes|schrieb|a\s+écrit|écrit|escribió|escreveu|schreef|geschreven
    |ha\s+scritto|skrev|kirjoitti|napisał|napisała|napsal|написал|написала|написав|пише)\b
    |写道|寫道|のメール""",
    re.IGNORECASE | re.VERBOSE,
)
_SHORT_ATTRIBUTION = re.compile(
    r"""^.{1,80}(?:\b(?:wrote|schrieb|a\s+écrit|escribió|escreveu|schreef|ha\s+scritto|skrev
    |napisał|написал|написав|пише)|写道|寫道)\s*(?:\(\w{1,3}\))?\s*[:：]$""",
    re.IGNORECASE | re.VERBOSE,
)
_ADDRESS_AND_TIME = re.compile(r"@.*\b\d{1,2}[:.]\d{2}\b|\b\d{1,2}[:.]\d{2}\b.*@")
"""Attributions without a verb carry the sender's address and the time: Gmail in Russian
("вт, 24 нояб. 2026 г. в 11:02, Mailgate <m@x>:") and Japanese ("2026年11月24日(火) 11:02 …:")."""
_ATTRIBUTION_OPENER = re.compile(
    r"""^(?:
        (?:on|am|le|el|op|em|den|il\s+giorno|il|w\s+dniu|dnia|dne|quoting|zitat\s+von)\s
      | [^\W\d_]{2,4}\.?,\s*\d{1,2}\b                             # "Tue, 24", "вт, 24"
      | \d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b | \d{4}\s*年          # 24.11.2026, 2026年
      | \d{1,2}\.?\s+\w{3,}\.?\s+\d{4}\b                      # 24 nov. 2026
      | (?:[^\s<>@:]+\s+){0,3}[<(]?\s*[\w.+-]+@                  # Name <addr@…, addr@…
    )""",
    re.IGNORECASE | re.VERBOSE,
)
"""How an attribution begins. A line that ends a sentence ("… 24. Nov.") may continue into the
next line only when it starts like an attribution, and a later line that starts like one begins
its own ("On second thought, no." above "On Tue, … wrote:")."""
_ATTRIBUTION_START = re.compile(
    r"^(?:quoting|zitat\s+von|citando|citation\s+de|citeren)\b.*:\s*$", re.IGNORECASE
)
_SEPARATOR = re.compile(r"^\s*(?:-{2,}\s*[^-\s].{0,60}?\s*-{2,}|_{8,}|[-=]{20,})\s*$")
_FORWARD_INTRO = re.compile(
    r"""^\s*(?:begin\s+forwarded\s+message|anfang\s+der\s+weitergeleiteten\s+nachricht
    |début\s+du\s+message\s+réexpédié|inicio\s+del\s+mensaje\s+reenviado
    |início\s+da\s+mensagem\s+(?:reencaminhada|encaminhada)|begin\s+doorgestuurd\s+bericht)\s*:""",
    re.IGNORECASE | re.VERBOSE,
)
_PHONE_SIGNATURE = re.compile(
    r"""^\s*(?:sent\s+(?:from|with|via)\s|get\s+outlook\s+for\s|envoyé\s+de\s+mon\s
    |von\s+meinem\s.{1,40}\s+gesendet|gesendet\s+von\s|enviado\s+desde\s+mi\s
    |enviado\s+d[eo]\s+meu\s|verzonden\s+(?:vanaf|met)\s|verstuurd\s+vanaf\s|inviato\s+da\s
    |skickat\s+från\s|sendt\s+fra\s|wysłane\s+z\s|отправлено\s+с\s|надіслано\s+з\s
    |outlook\s+für\s+(?:ios|android)\s+beziehen|obtenir\s+outlook\s+pour\s
    |obtener\s+outlook\s+para\s|obter\s+o\s+outlook\s+para\s|outlook\s+voor\s+(?:ios|android)
    |skaffa\s+outlook\s+för\s|scarica\s+outlook\s+per\s|pobierz\s+aplikację\s+outlook
    |(?:получить|скачайте|загрузите)\s+outlook\s+для\s|(?:завантажте|отримати)\s+outlook\s+для\s
    |(?:ios|android)\s*(?:用|版)\s*の?\s*outlook|获取\s*outlook|取得\s*(?:ios|android)\s*版\s*outlook
    ).{0,60}$
    |^\s*(?:iphone|ipad|android)\s*から送信\s*$|^\s*发自我的\s*(?:iphone|ipad)\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_HEADER_FIRST = re.compile(
    r"""^\s*\*?(?:from|de|von|van|da|fra|från|od|від|от|от\s+кого|差出人|发件人|寄件者)
    \s?\*?\s?[:：]\s*\S""",
    re.IGNORECASE | re.VERBOSE,
)
_HEADER_NEXT = re.compile(
    r"""^\s*\*?(?:sent|enviado(?:\s+el)?|enviada(?:\s+em)?|gesendet|envoyé|verzonden|inviato
    |skickat|wysłano|надіслано|отправлено|送信日時|发送时间|寄件日期
    |date|datum|fecha|data|дата|日付|日期|to|para|an|à|aan|a|til|till|do|кому|宛先|收件人|收件者
    |subject|asunto|assunto|betreff|objet|onderwerp|oggetto|ämne|temat|тема|件名|主题|主旨
    |cc)\s?\*?\s?[:：]""",
    re.IGNORECASE | re.VERBOSE,
)
"""An Outlook-style header block, for the variants mail-parser-reply lacks (Portuguese "De: /
Enviada em:", Spanish "Enviado el:", Polish, Ukrainian, Russian, Japanese, Chinese; full-width
colons): a "From:" line directly followed by another field."""
_PLACEHOLDER = re.compile(r"^\s*(?:\[(?:cid|image):[^\]]*\]|<image\d*\.\w+>)\s*$", re.IGNORECASE)
_CLOSING = re.compile(
    rf"""^\s*(?:thanks|thank\s+you|many\s+thanks|cheers|best|best\s+regards|kind\s+regards
    |regards|warm\s+regards|all\s+the\s+best|br|greetings|sincerely|yours\s+truly
    |viele\s+grüße|schöne\s+grüße|liebe\s+grüße|beste\s+grüße|herzliche\s+grüße|grüße|gruß
    |mit\s+freundlichen\s+grüßen|mfg|lg|vg|danke|cordialement|bien\s+à\s+vous|amitiés|merci
    |bonne\s+journée|saludos|un\s+saludo|atentamente|gracias|un\s+abrazo|groeten
    |met\s+vriendelijke\s+groet(?:en)?|vriendelijke\s+groet(?:en)?|hartelijke\s+groet(?:en)?
    |mvg|bedankt|obrigad[oa]|abraços?|atenciosamente|cumprimentos|att|saudações|grazie
    |cordiali\s+saluti|saluti)\b[\s,.!]*{_NAME}?\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
"""A closing line, alone or with the writer's name: "Thanks,", "Best, Alice", "Groeten"."""

_BLOCKS = frozenset(
    {
        "address",
        "article",
        "aside",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
_PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"})
_INVISIBLE = frozenset({"head", "style", "script", "title", "template", "noscript", "xml"})
_QUOTE_CONTAINERS = etree.XPath(
    "//blockquote"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' gmail_quote ')]"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' yahoo_quoted ')]"
)
_HISTORY_STARTS = etree.XPath(
    "//*[@id='divRplyFwdMsg' or @id='appendonsend' or @id='zwchr' or @id='stopSpelling']"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' moz-forward-container ')]"
)
_SIGNATURES = etree.XPath(
    "//*[@id='Signature' or @id='signature']"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' gmail_signature ')]"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' moz-signature ')]"
)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")
"""Characters lxml refuses; they become U+FFFD, which the classifier reads as undecodable."""
_SPACES = re.compile(r"[ \t\r\n\f\v\xa0]+")


def new_text(body: str, *, names: Sequence[str] = ()) -> str:
    """The text the sender typed into this reply. ``names`` are how they sign (display name)."""
    lines = _unquoted(body.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    signed = _without_signature(_above_header_block(lines), names)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in signed)).strip()


def unflow(text: str, *, delsp: bool) -> str:
    """Join the soft line breaks of a ``format=flowed`` body (RFC 3676)."""
    out: list[str] = []
    pending: tuple[int, str] | None = None
    for raw in text.replace("\r\n", "\n").split("\n"):
        depth = len(raw) - len(raw.lstrip(">"))
        line = raw[depth:]
        if line.startswith(" "):
            line = line[1:]
        if pending is not None and pending[0] == depth:
            line = pending[1] + line
        elif pending is not None:
            out.append(_QUOTE_MARK * pending[0] + (" " if pending[0] else "") + pending[1])
        pending = None
        if line.endswith(" ") and line != "-- ":
            pending = (depth, line[:-1] if delsp else line)
            continue
        out.append(_QUOTE_MARK * depth + (" " if depth else "") + line)
    if pending is not None:
        out.append(_QUOTE_MARK * pending[0] + (" " if pending[0] else "") + pending[1])
    return "\n".join(out)


def html_to_text(markup: str) -> str:
    """Readable text of an HTML body, each quoting container reduced to one ``>`` line."""
    cleaned = _CONTROL.sub("\ufffd", _XML_DECLARATION.sub("", markup))
    try:
        root = lxml_html.document_fromstring(cleaned)
    except (etree.ParserError, ValueError):
        return ""
    for node in root.xpath("//comment() | //processing-instruction()"):
        _remove(node)
    for node in _HISTORY_STARTS(root):
        if _attached(node, root):
            _remove_from(node)
    for node in _SIGNATURES(root):
        if _attached(node, root):
            _remove(node)
    for node in _QUOTE_CONTAINERS(root):
        if _attached(node, root):
            _replace_with_quote_mark(node)
    return _render(root)


# --- plain text ----------------------------------------------------------------------------------


def _unquoted(lines: list[str]) -> list[str]:
    """Drop quoted lines and their attribution; stop where unquoted history begins."""
    kept: list[str] = []
    at = 0
    while at < len(lines):
        line = lines[at]
        if _QUOTED.match(line):
            at += 1
            continue
        if _ends_new_text(line) or _starts_header_block(lines, at):
            break
        span = _attribution_span(lines, at)
        if span:
            following = next((x for x in lines[at + span :] if x.strip()), None)
            if following is None or not _QUOTED.match(following):
                break
            at += span
            continue
        if not _PLACEHOLDER.match(line):
            kept.append(line)
        at += 1
    return kept


def _ends_new_text(line: str) -> bool:
    return bool(
        line.rstrip() == "--"
        or _SEPARATOR.match(line)
        or _FORWARD_INTRO.match(line)
        or _PHONE_SIGNATURE.match(line)
    )


def _starts_header_block(lines: list[str], at: int) -> bool:
    following = lines[at + 1] if at + 1 < len(lines) else ""
    return bool(_HEADER_FIRST.match(lines[at]) and _HEADER_NEXT.match(following))


def _attribution_span(lines: list[str], at: int) -> int:
    """How many lines (1-3) an attribution starting here spans, or 0 if none starts here.

    Clients wrap a long "On <date>, <name> <address> wrote:" over two or three lines; a blank
    line is never part of one, and a line that ends a sentence only when the attribution opens
    like one and the date was wrapped after its abbreviated month ("Am Di., 24. Nov.").
    """
    joined = ""
    opens = bool(_ATTRIBUTION_OPENER.match(lines[at].strip()))
    for span in range(1, _MAX_ATTRIBUTION_LINES + 1):
        if at + span > len(lines):
            return 0
        line = lines[at + span - 1].strip()
        if not line or _QUOTED.match(line):
            return 0
        if joined.endswith((".", "!", "?")) and (not opens or _ATTRIBUTION_OPENER.match(line)):
            return 0
        joined = f"{joined} {line}".strip()
        if len(joined) > _MAX_ATTRIBUTION_CHARS:
            return 0
        if _is_attribution(joined):
            return span
    return 0


def _is_attribution(line: str) -> bool:
    if not line.endswith((":", "：")):
        return False
    if _ATTRIBUTION_START.match(line) or _SHORT_ATTRIBUTION.match(line):
        return True
    if _ADDRESS_AND_TIME.search(line):
        return True
    verb = _ATTRIBUTION_VERB.search(line)
    return verb is not None and bool(re.search(r"\d|@", line))


def _above_header_block(lines: list[str]) -> list[str]:
    """The lines above the first unquoted header block mail-parser-reply's patterns know."""
    probe = "\n".join(
        _BLANK_RUN.sub(" ", line.strip())[:HEADER_LINE_CHARS]
        for line in lines[:HEADER_SEARCH_LINES]
    )
    match = _HEADER_BLOCK.search(probe)
    if match is None:
        return lines
    start = match.start()
    while start < len(probe) and probe[start] == "\n":
        start += 1
    return lines[: probe.count("\n", 0, start)]


def _without_signature(lines: list[str], names: Sequence[str]) -> list[str]:
    own_names = {n.casefold() for n in names if n.strip()}
    seen_text = False
    for index, line in enumerate(lines):
        stripped = line.strip()
        if seen_text and (
            _SIGNATURE_DASHES.match(stripped)
            or _CLOSING.match(stripped)
            or stripped.lstrip("-–—~ ").casefold() in own_names
        ):
            return lines[:index]
        seen_text = seen_text or bool(stripped)
    return lines


# --- HTML ----------------------------------------------------------------------------------------


def _attached(node: etree._Element, root: etree._Element) -> bool:
    return any(ancestor is root for ancestor in node.iterancestors())


def _remove(node: etree._Element) -> None:
    parent = node.getparent()
    if parent is None:
        return
    tail = node.tail
    previous = node.getprevious()
    parent.remove(node)
    if tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail


def _remove_from(node: etree._Element) -> None:
    """Remove the node and everything after it in document order."""
    current: etree._Element | None = node
    while current is not None and current.getparent() is not None:
        while (following := current.getnext()) is not None:
            current.getparent().remove(following)
        current.tail = None
        current = current.getparent()
    parent = node.getparent()
    if parent is not None:
        parent.remove(node)


def _replace_with_quote_mark(node: etree._Element) -> None:
    parent = node.getparent()
    if parent is None:
        return
    mark = etree.Element("div")
    mark.text = _QUOTE_MARK
    mark.tail = node.tail
    parent.replace(node, mark)


def _render(root: etree._Element) -> str:
    chunks: list[str] = []

    def newlines(wanted: int) -> None:
        present = 0
        for chunk in reversed(chunks):
            if chunk.strip(" "):
                if chunk.strip("\n"):
                    break
                present += len(chunk)
        chunks.append("\n" * max(0, wanted - present))

    hidden = 0
    for event, node in etree.iterwalk(root, events=("start", "end")):
        tag = node.tag if isinstance(node.tag, str) else ""
        if tag in _INVISIBLE:
            hidden += 1 if event == "start" else -1
        elif hidden:
            continue
        elif event == "start":
            if tag == "br":
                chunks.append("\n")
            elif tag in _BLOCKS:
                newlines(1)
            chunks.append(_SPACES.sub(" ", node.text or ""))
            continue
        elif tag in _BLOCKS:
            newlines(2 if tag in _PARAGRAPHS else 1)
        if event == "end" and not hidden and node.tail:
            chunks.append(_SPACES.sub(" ", node.tail))
    lines = (line.strip() for line in "".join(chunks).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
