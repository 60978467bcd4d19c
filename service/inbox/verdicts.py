"""Approve, reject or unclear: what the opening of a person's new text means.

A first-word lookup fails both ways: "No problem, approved." starts with "no", and "I can't say
yes to this" contains "yes". So the opening is read clause by clause. Greetings, fillers and
subject words are skipped, negations are remembered, and the clause's head is matched against
phrases for approving and rejecting (English, German, French, Spanish, Dutch, Portuguese, some
Italian, and emoji). A sentence that asks, hedges, defers, sets a condition or says both decides
nothing.

Approvals are held to a stricter bar than rejections, because a wrong approval publishes while a
wrong rejection costs one more round: a bare "yes"/"ok" only counts when nothing else of substance
shares its sentence, any hedge in the sentence voids it, and a later "no" in the text turns it
into "unclear". Two kinds of clause may share an approval's sentence without voiding it: praise
("yes — nice work") and a plan for the page ("Approved, will publish tomorrow"), whose time words
schedule the publishing rather than defer the decision; a plan with a condition in it ("will
publish once legal agrees") is no plan. Text that is not readable (control characters,
undecodable bytes) decides nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["approve", "reject", "unclear"]

OPENING_SENTENCES = 4
"""How many sentences of content (greetings aside) may carry the decision."""

READ_CHARS = 20_000
"""How much of the text is read for the decision and for a "no" that takes an approval back;
the reason is still taken from the whole text."""

_WRAPPED_LINE_CHARS = 60
"""A line at least this long that ends without punctuation was probably wrapped by the client."""

# --- lexicon -----------------------------------------------------------------------------------
# Phrases are written naturally; they pass through the same tokenizer and normalization as the
# text (case and accents folded), so "está ótimo" matches "esta otimo" and "Esta ótimo".

_APPROVE_STRONG = """
approve | approved | approve it | approve this | i approve | lgtm | looks good | ok for me |
okay for me | fine for me | good for me | ok pour moi | c'est ok | für mich ok | ok für mich |
looks great | looks fine | looks ok | looks okay | looks perfect | looks right | sounds good |
sounds great | sounds fine | go ahead | go for it | good to go | ship it | send it | send it out |
publish it | publish | please publish | proceed | fine by me | fine with me | ok by me |
ok with me | okay by me | works for me | all good | happy with it | happy with this | accepted |
accept | green light | signed off | no objection | no objections | no concerns | no complaints |
no changes needed | nothing to change | sure thing | genehmigt | genehmige | freigegeben |
freigabe | einverstanden | passt | passt so | passt schon | in ordnung | geht klar | alles gut |
alles klar | sieht gut aus | gut so | keine einwände | d'accord | approuvé | approuve | validé |
je valide | c'est bon | ça marche | ça me va | vas-y | allez-y | aucune objection |
tu peux publier | vous pouvez publier | de acuerdo | aprobado | aprobada | apruebo | adelante |
dale | sin objeciones | puedes publicar | akkoord | goedgekeurd | keur goed | is goed |
ziet er goed uit | ga je gang | ga maar | doe maar | geen bezwaar | prima zo | aprovado |
aprovada | aprovo | pode publicar | pode seguir | pode mandar | pode enviar | pode avançar |
podem publicar | de acordo | está ótimo | tá ótimo | tudo certo | sem objeções | approvato |
va bene | d'accordo
"""

_APPROVE_WEAK = """
yes | yeah | yep | yup | yea | sure | ok | okay | okey | alright | all right | fine | perfect | go |
absolutely | definitely | certainly | of course | agreed | agree | confirmed |
👍 | 👌 | ✅ | ✔ | ✓ | ☑ | 🆗 | +1 |
ja | jawohl | jep | jo | klar | gerne | oui | ouais | parfait | vale | claro | perfecto |
sim | perfeito | beleza | prima | oké | jazeker | perfetto
"""

_REJECT = """
nope | nah | nay | negative | reject | rejected | rejecting | decline | declined | declining |
deny | denied | disapprove | disapproved | refuse | refused | veto | vetoed | no way | no go |
no-go | no thanks | no thank you | absolutely not | definitely not | certainly not |
of course not | not at all | not really | not this one | not like this | i don't think so |
i do not think so | 👎 | ❌ | ✖ | ✗ | ✘ | 🚫 | ⛔ | -1 | nein | abgelehnt | ablehnen | lehne ab |
auf keinen fall | keinesfalls | so nicht | lieber nicht | non | refusé | rejeté | je refuse |
pas question | hors de question | certainement pas | surtout pas | rechazado | rechazada |
rechazo | denegado | negativo | de ninguna manera | para nada | ni hablar | nee | neen |
afgewezen | afgekeurd | geweigerd | liever niet | zeker niet | absoluut niet | echt niet |
rejeitado | rejeitada | recusado | recusada | reprovado | reprovada | negado | de jeito nenhum |
nem pensar | claro que não | respinto | rifiutato
"""

_MODIFIERS = """
approve | approved | accept | accepted | confirmed | agreed | publish | genehmigt | freigegeben |
approuvé | validé | aprobado | aprobada | goedgekeurd | aprovado | aprovada | approvato
"""
"""Approvals that also name things: "Approved." approves, "Approved senders get…" and "Approve
button is broken" do not. Followed by a word, they approve only if it is one of _AFTER_MODIFIERS."""

_AFTER_MODIFIERS = """
the | a | an | all | both | them | please | asap | today |
by | for | from | with | as | and | on | at | now | here | already | too | also | it | this |
that | me | not | pas | nicht | niet | von | durch | für | par | pour | por | para | door | voor |
pelo | pela | da | per
"""

_NEUTRAL = """
no problem | no problems | no worries | no doubt | no question | no questions | no rush |
kein problem | keine sorge | pas de problème | pas de souci | aucun problème | no hay problema |
sin problema | ningún problema | geen probleem | geen zorgen | sem problema | sem problemas |
não há problema | nenhum problema | nessun problema
"""

_HEDGES = """
maybe | perhaps | possibly | probably | likely | not sure | unsure | not certain | uncertain |
dunno | don't know | do not know | no idea | i think | i guess | i suppose | depends | depending |
kind of | sort of | partly | partially | somewhat | more or less | almost | nearly | not yet |
not now | not until | let me | let's | let us | i'll | i will | we'll | will check | will look |
will read | will review | will get back | get back | come back | later | tonight | tomorrow |
next week | hold on | hold off | on hold | wait | in principle | grundsätzlich | im prinzip |
en principe | en principio | em princípio | in principe | in linea di principio | if | unless |
provided | providing | as long as | assuming | once | only when | when i | when we | but |
however | though | although | except | apart from | other than | got it | received | arrived |
noted | acknowledged | question | hmm | haven't | have not | need to | needs to | have to |
first | vielleicht | eventuell | evtl | wahrscheinlich | nicht sicher | unsicher | noch nicht |
später | morgen | heute abend | wenn | falls | sofern | aber | jedoch | außer | bis auf |
mal sehen | muss noch | ich schaue | ich prüfe | melde mich | kommt drauf an | weiß nicht |
keine ahnung | moment | warte | erhalten | peut-être | peut être | probablement | pas sûr |
pas certain | pas encore | plus tard | demain | ce soir | si | sauf | mais | cependant |
toutefois | à condition | je vais vérifier | je reviens | je regarde | je ne sais pas |
aucune idée | attends | reçu | quizás | quizá | tal vez | a lo mejor | probablemente |
no estoy seguro | no estoy segura | todavía no | aún no | más tarde | mañana | esta noche | pero |
sin embargo | excepto | salvo | a menos que | siempre que | déjame | lo reviso | te aviso |
no sé | ni idea | espera | recibido | misschien | wellicht | waarschijnlijk | niet zeker |
nog niet | vanavond | als | indien | tenzij | maar | behalve | even checken | ik kijk |
laat het weten | weet niet | geen idee | wacht | ontvangen | talvez | provavelmente |
não tenho certeza | não sei | ainda não | mais tarde | amanhã | hoje à noite | se | mas | porém |
contudo | exceto | desde que | vou verificar | vou ver | deixa eu ver | deixe-me | pode ser |
recebido | forse | non ancora | più tardi | però | mostly | largely | basically | generally |
roughly | kinda | sorta | i believe | should be | seems | seem | appears | at first glance |
after | before | until | till | as soon as | pending | for now | sobald | nachdem | dès que |
après | después | zodra | depois
"""
"""Uncertainty, conditions, contrast, deferral and mere acknowledgement: none of them approve."""

_DOUBTS = """
maybe | perhaps | possibly | probably | not sure | unsure | not certain | dunno | don't know |
do not know | no idea | i think | i guess | depends | let me | if | unless | not yet |
vielleicht | eventuell | wahrscheinlich | nicht sicher | noch nicht | wenn | falls |
kommt drauf an | weiß nicht | keine ahnung | peut-être | peut être | probablement | pas sûr |
pas encore | si | je ne sais pas | quizás | quizá | tal vez | a lo mejor | probablemente |
no estoy seguro | no estoy segura | todavía no | aún no | no sé | ni idea | misschien | wellicht |
waarschijnlijk | niet zeker | nog niet | als | tenzij | weet niet | geen idee | talvez |
provavelmente | não tenho certeza | não sei | ainda não | se | pode ser | forse | non ancora |
yet
"""
"""The hedges that make a "no" no rejection when said before it or in its clause ("maybe not",
"if so, no", "not approved yet")."""

_NEGATORS = """
not | don't | dont | do not | doesn't | does not | didn't | did not | can't | cant | cannot |
can not | won't | wont | will not | wouldn't | would not | shouldn't | should not | couldn't |
could not | isn't | is not | aren't | are not | wasn't | never | nicht | kein | keine | nie |
niemals | pas | n' | ne | jamais | nunca | niet | geen | nooit | nem
"""

_LEAD_INS = """
i | we | i'd | i'm | i am | we're | we are | i've | i have | we've | i do | we do | i hereby |
hereby | it | it's | it is | this | this is | that | that's | that is | this one is | all |
please | just | so | then | well | um | uh | oh | ah | honestly | actually | really | also |
totally | fully | completely | sorry | unfortunately | sadly | i'm afraid | afraid | say | i say |
i'd say | would say | my answer is | the answer is | answer | answer is | decision | verdict |
happy to | glad to | you can | you may | feel free to | ok to | fine to | ich | wir | ist | es |
das | das ist | leider | also | ehrlich gesagt | je | nous | c'est | malheureusement | désolé |
désolée | alors | yo | lo | está | lamentablemente | lo siento | ik | het | dat | dit | is |
helaas | nou | eu | isso | infelizmente | desculpa | desculpe | io
"""

_GREETINGS = """
hi | hello | hey | hiya | dear | greetings | good morning | good afternoon | good evening |
hallo | moin | servus | guten morgen | guten tag | guten abend | liebe | lieber | bonjour |
bonsoir | salut | coucou | cher | chère | hola | buenos días | buenas tardes | buenas | estimado |
estimada | hoi | goedemorgen | goedemiddag | goedenavond | beste | olá | ola | oi | bom dia |
boa tarde | boa noite | prezado | prezada | ciao | buongiorno
"""

_THANKS = """
thanks | thank you | thx | ty | cheers | many thanks | thanks a lot | merci | merci beaucoup |
danke | danke schön | vielen dank | gracias | muchas gracias | obrigado | obrigada | bedankt |
dank je | dank u | grazie
"""

_LIGHT_WORDS = """
please | indeed | absolutely | definitely | certainly | of course | totally | sir | from me |
bitte | s'il vous plaît | por favor | graag | alsjeblieft | hoor | so | again | too
"""
"""Words that may follow a bare "yes"/"ok" without giving it new content ("yes please")."""

_PLANS = """
publish | publishing | post | posting | post it | ship | shipping | release | releasing | merge |
merging | deploy | deploying | schedule | scheduling | go live | going live | put it live |
push it live | roll it out | rolling it out | send it out | sending it out | veröffentliche |
veröffentlichen | stelle es online | publie | publions | publierai | publico | publicamos |
publicaré | publiceer | publiceren | publicar | publicaremos | pubblico | pubblichiamo
"""
"""What an approver does with an approved page. After an approval, a clause that does one of
these is the approval's plan ("Approved, will publish tomorrow"), not a condition on it."""

_PLAN_LEADS = """
i | we | i'll | we'll | i will | we will | will | i'm | we're | i am | we are | am | are |
going to | gonna | then | so | and | ich | wir | je | nous | on | lo | la | ik | vou | vamos | eu |
nos | io | noi
"""
"""Who does the plan, and when: the words a plan may start with."""

_PLAN_OBJECTS = """
it | this | that | this one | them | the summary | the page | the post | the article | es | le |
la | lo | het | o | isso | questo
"""
"""What a plan acts on. Anything else after the verb makes it another errand ("scheduling a call",
"merging the drafts"), unless it is a time ("publishing tomorrow")."""

_SCHEDULE = """
now | right away | right now | asap | today | tomorrow | tonight | tomorrow morning | later |
later today | this morning | this afternoon | this evening | next week | for next week |
for tomorrow | on monday | on tuesday | on wednesday | on thursday | on friday | monday | tuesday |
wednesday | thursday | friday | heute | morgen | gleich | sofort | heute abend | demain |
aujourd'hui | ce soir | maintenant | mañana | hoy | esta noche | ahora | vandaag | vanavond | nu |
amanhã | hoje | hoje à noite | agora | domani | oggi | stasera
"""
"""When a plan happens; in a plan these are a schedule, elsewhere they defer ("I'll look
tomorrow")."""

_PRAISE = """
nice work | great work | good work | excellent work | nice job | great job | good job | well done |
well written | great summary | nice summary | good summary | excellent summary | love it |
i love it | love this | thanks for this | thanks for that | thank you for this |
thanks for the summary | thank you for the summary | beautiful | brilliant | awesome | excellent |
great | nice | wonderful | fantastic | superb | 👏 | 🙌 | gut gemacht | toll | klasse | super |
sehr gut | beau travail | bon travail | bien joué | bravo | excellent travail | buen trabajo |
muy bien | genial | excelente | goed gedaan | mooi werk | mooi | bom trabalho | ótimo trabalho |
excelente trabalho | muito bem | ottimo lavoro | ben fatto
"""
"""A comment that adds mood to an approval in the same sentence ("yes — nice work")."""

_DOUBTFUL_EMOJI = frozenset("🤔🤷😕😐🙁☹😬❓❔⁉😟🫤")

_NO_WORDS = frozenset({"no", "nao", "n"})
"""Words that are an answer before a pause, and a determiner or a negation otherwise."""

_AFTER_ANSWER_NO = """
i | we | it | it's | its | this | that | these | those | the | a | an | you | they | please |
thanks | thank | sorry | not | never | but | and | or | so | just | definitely | absolutely |
really | unfortunately | sadly | because | since | as | wait | again | sir | mate | there |
there's | i'm | i've | i'd | we're | let's | my | our | your | no | nope | nein | non | nee
"""
"""Words after which a "no" is the answer, not a determiner ("no, I…" vs "no changes")."""

_CLAUSE_CONJUNCTIONS = "and | but | because | und | aber | et | mais | pero | maar | mas"
"""Conjunctions that start a new clause with a head of its own ("I read it and I can't say
yes"). They stay in the clause as a lead-in, so hedges such as "but" are still seen."""

_JOINED_YES = "yes | yeah | yep | ja | oui | si | sim"
_JOINED_NO = "no | nope | nein | non | não | nee"
_CONJUNCTIONS = "and | or | und | oder | et | ou | y | o | en | of | e"

_REASON_OBJECT = re.compile(
    r"^[ \t]+(?:(?:to\s+)?(?:this|that|it)(?:\s+one)?|pas|nicht|niet)\b", re.IGNORECASE
)
"""The object of a negated approval: "don't approve *this*", "can't say yes *to this one*"."""

_REASON_PAUSE = re.compile(r"^[ \t,;:.!?…)\]\-–—]+")
"""Punctuation between the "no" and the reason on its line (not opening quotes or brackets)."""

_REASON_LEAD = re.compile(
    r"""^(?:
        [\s,;:.!?…)\]]+
      | (?:thanks|thank\s+you|sorry)(?:\s*[,;:.!]+|\s*$)
      | (?:reason|because|grund|raison|motivo|reden|razão|razao)\s*:
    )""",
    re.IGNORECASE | re.VERBOSE,
)
"""What may still stand before the reason: line breaks, a polite word, a "Reason:" label. A dash
that starts a line is a list's bullet and stays."""

_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
"""Links are blanked before reading: "…?a=approve" in a pasted link is no answer."""
_UNREADABLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufffd]")

_TOKEN = re.compile(
    r"""
    (?P<word>[^\W_]+(?:['’‘`´\-][^\W_]+)*['’]?)
  | (?P<score>(?<![\w+\-])[+\-]1(?!\w))
  | (?P<emoji>[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF]
              [\U0001F3FB-\U0001F3FF\uFE0F\u200D\U0001F000-\U0001FAFF\u2600-\u27BF]*)
  | (?P<stop>[.!?…]+(?=\s|$|["'”’)\]*_]))
  | (?P<pause>[,;:()]|(?<!\S)[-–—]+(?!\S)|[–—]+)
  | (?P<newline>\n)
    """,
    re.VERBOSE,
)
_EMOJI_MODIFIERS = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f\u200d]")
_ELISION_PREFIX = re.compile(r"(?:n|j|c|d|l|s|m|t|qu)'")
_ELISION = re.compile(r"^(n|j|c|d|l|s|m|t|qu)'(.+)$")


def classify(text: str) -> tuple[Verdict, str | None]:
    """The verdict of a person's new text, and for a rejection the reason they gave (or None)."""
    if _UNREADABLE.search(text, 0, READ_CHARS):
        return "unclear", None
    sentences = _sentences(_URL.sub(lambda url: " " * len(url.group()), text[:READ_CHARS]))
    content = [s for s in sentences if not s.is_light]
    opening = content[0].start if content else 0
    for index, sentence in enumerate(content[:OPENING_SENTENCES]):
        verdict, cue = _decide(sentence)
        if verdict == "approve":
            later = content[index + 1 :]
            return ("unclear", None) if _says_no(later) else ("approve", None)
        if verdict == "reject" and cue is not None:
            return "reject", _reason(text, opening, cue)
        if verdict == "unclear":
            return "unclear", None
    return "unclear", None


# --- tokens and sentences ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    word: str  # case- and accent-folded
    start: int
    end: int
    capitalized: bool


@dataclass(frozen=True)
class _Cue:
    polarity: Literal["approve", "reject"]
    strong: bool
    start: int  # offsets of the cue in the text
    end: int


@dataclass(frozen=True)
class _Clause:
    tokens: tuple[_Token, ...]
    cue: _Cue | None
    negated_rejection: bool  # "I don't reject it": neither a yes nor a no
    is_light: bool  # greeting, thanks, "no problem": carries no content of its own
    bare_tail: bool  # after the cue only cues and polite words follow


@dataclass(frozen=True)
class _Sentence:
    clauses: tuple[_Clause, ...]
    question: bool
    start: int

    @property
    def tokens(self) -> list[_Token]:
        return [t for c in self.clauses for t in c.tokens]

    @property
    def cues(self) -> list[_Cue]:
        return [c.cue for c in self.clauses if c.cue is not None]

    @property
    def is_light(self) -> bool:
        return not self.question and all(c.is_light for c in self.clauses)


def _fold(word: str) -> str:
    word = unicodedata.normalize("NFKD", word.casefold())
    word = "".join(ch for ch in word if not unicodedata.combining(ch))
    return word.translate(str.maketrans("’‘`´", "''''"))


def _tokens_and_breaks(text: str) -> Iterable[tuple[str, _Token | None]]:
    """Yield ("word", token), or (kind, None) for a "stop", "?", "pause" or line "break"."""
    previous_line_end = 0
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or ""
        raw = match.group()
        if kind == "newline":
            line = text[previous_line_end : match.start()]
            previous_line_end = match.end()
            wrapped = len(line) >= _WRAPPED_LINE_CHARS and not line.rstrip().endswith(
                (".", "!", "?", ":")
            )
            if not wrapped:
                yield "break", None
        elif kind == "stop":
            yield ("?" if "?" in raw else "stop"), None
        elif kind == "pause":
            yield "pause", None
        elif kind == "emoji":
            folded = _EMOJI_MODIFIERS.sub("", raw)
            for offset, char in enumerate(folded):
                yield "word", _Token(char, match.start() + offset, match.end(), False)
        else:
            yield from _words(raw, match.start())


def _words(raw: str, start: int) -> Iterable[tuple[str, _Token | None]]:
    word = _fold(raw)
    capitalized = raw[:1].isupper()
    if elided := _ELISION.match(word):  # French "n'approuve" reads as "n'" and "approuve"
        head = elided.group(1) + "'"
        yield "word", _Token(head, start, start + len(head), capitalized)
        yield "word", _Token(elided.group(2), start + len(head), start + len(raw), False)
    elif _ELISION_PREFIX.fullmatch(word):
        yield "word", _Token(word, start, start + len(raw), capitalized)
    else:
        yield "word", _Token(word.rstrip("'"), start, start + len(raw), capitalized)


def _sentences(text: str) -> list[_Sentence]:
    sentences: list[_Sentence] = []
    clauses: list[list[_Token]] = [[]]

    def close(question: bool) -> None:
        parts = [c for c in clauses if c]
        if parts:
            sentences.append(_Sentence(tuple(_read(c) for c in parts), question, parts[0][0].start))
        clauses[:] = [[]]

    for kind, token in _tokens_and_breaks(text):
        if token is not None:
            if clauses[-1] and _CLAUSE_CONJUNCTION_PHRASES.match([token], 0):
                clauses.append([])
            clauses[-1].append(token)
        elif kind == "pause":
            clauses.append([])
        else:
            close(question=kind == "?")
    close(question=False)
    return sentences


# --- phrase tables -------------------------------------------------------------------------------


class _Phrases:
    """A set of phrases, matched longest first at a position in a token list."""

    def __init__(self, source: str) -> None:
        self._by_length: dict[int, set[tuple[str, ...]]] = {}
        for phrase in source.split("|"):
            words = tuple(t.word for _, t in _tokens_and_breaks(phrase.strip()) if t)
            if words:
                self._by_length.setdefault(len(words), set()).add(words)
        self._lengths = sorted(self._by_length, reverse=True)

    def match(self, tokens: Sequence[_Token], at: int) -> int:
        for length in self._lengths:
            words = tuple(t.word for t in tokens[at : at + length])
            if len(words) == length and words in self._by_length[length]:
                return length
        return 0

    def find(self, tokens: Sequence[_Token]) -> int | None:
        """The index of the first token that starts a phrase, or None."""
        return next((i for i in range(len(tokens)) if self.match(tokens, i)), None)


_APPROVE_STRONG_PHRASES = _Phrases(_APPROVE_STRONG)
_APPROVE_WEAK_PHRASES = _Phrases(_APPROVE_WEAK)
_REJECT_PHRASES = _Phrases(_REJECT)
_NEUTRAL_PHRASES = _Phrases(_NEUTRAL)
_HEDGE_PHRASES = _Phrases(_HEDGES)
_DOUBT_PHRASES = _Phrases(_DOUBTS)
_NEGATOR_PHRASES = _Phrases(_NEGATORS)
_LEAD_IN_PHRASES = _Phrases(_LEAD_INS)
_GREETING_PHRASES = _Phrases(_GREETINGS)
_THANKS_PHRASES = _Phrases(_THANKS)
_LIGHT_PHRASES = _Phrases(_LIGHT_WORDS)
_MODIFIER_PHRASES = _Phrases(_MODIFIERS)
_AFTER_MODIFIER_PHRASES = _Phrases(_AFTER_MODIFIERS)
_AFTER_ANSWER_NO_PHRASES = _Phrases(_AFTER_ANSWER_NO)
_JOINED_YES_PHRASES = _Phrases(_JOINED_YES)
_JOINED_NO_PHRASES = _Phrases(_JOINED_NO)
_CONJUNCTION_PHRASES = _Phrases(_CONJUNCTIONS)
_CLAUSE_CONJUNCTION_PHRASES = _Phrases(_CLAUSE_CONJUNCTIONS)
_PLAN_PHRASES = _Phrases(_PLANS)
_PLAN_LEAD_PHRASES = _Phrases(_PLAN_LEADS)
_SCHEDULE_PHRASES = _Phrases(_SCHEDULE)
_PRAISE_PHRASES = _Phrases(_PRAISE)
_PLAN_OBJECT_PHRASES = _Phrases(_PLAN_OBJECTS)
_PRAISE_TOPICS = frozenset({"on", "for", "with", "in"})


# --- clauses -------------------------------------------------------------------------------------


def _read(tokens: list[_Token]) -> _Clause:
    """Skip what leads into the clause, then read its head as a yes, a no, or neither."""
    whole = tuple(tokens)
    at, negated = 0, False
    while at < len(tokens):
        if _HEDGE_PHRASES.match(tokens, at) and not _is_bare_si(tokens, at):
            return _Clause(whole, None, False, False, False)
        if skipped := _NEUTRAL_PHRASES.match(tokens, at) or _THANKS_PHRASES.match(tokens, at):
            at += skipped
            continue
        if clause := _head(tokens, at, negated):
            return clause
        if skipped := _GREETING_PHRASES.match(tokens, at):
            at = _after_names(tokens, at + skipped)
            continue
        if tokens[at].word in _NO_WORDS:
            negated, at = True, at + 1
            continue
        if skipped := _NEGATOR_PHRASES.match(tokens, at):
            negated, at = True, at + skipped
            continue
        if skipped := _LEAD_IN_PHRASES.match(tokens, at) or _CLAUSE_CONJUNCTION_PHRASES.match(
            tokens, at
        ):
            at += skipped
            continue
        return _Clause(whole, None, False, False, False)
    return _Clause(whole, None, False, not negated, False)


def _after_names(tokens: list[_Token], at: int) -> int:
    """Skip the name after a greeting ("Hi Alice team,"): up to three words that are no cue."""
    for _ in range(3):
        if at >= len(tokens) or _head(tokens, at, negated=False):
            break
        at += 1
    return at


def _head(tokens: list[_Token], at: int, negated: bool) -> _Clause | None:
    whole = tuple(tokens)
    strong = _APPROVE_STRONG_PHRASES.match(tokens, at)
    approving = strong or _approve_weak(tokens, at)
    rejecting = _REJECT_PHRASES.match(tokens, at) or _answer_no(tokens, at)
    if approving > rejecting and _used_as_adjective(tokens, at, approving):
        return _Clause(whole, None, False, False, False)
    if approving > rejecting:
        polarity: Literal["approve", "reject"] = "reject" if negated else "approve"
        cue = _Cue(polarity, bool(strong), tokens[at].start, tokens[at + approving - 1].end)
        return _Clause(whole, cue, False, False, _bare_tail(tokens, at + approving))
    if rejecting:
        if negated:
            return _Clause(whole, None, True, False, False)
        cue = _Cue("reject", True, tokens[at].start, tokens[at + rejecting - 1].end)
        return _Clause(whole, cue, False, False, False)
    return None


def _used_as_adjective(tokens: list[_Token], at: int, length: int) -> bool:
    after = at + length
    if _MODIFIER_PHRASES.match(tokens, at) != length or after >= len(tokens):
        return False
    return not (_AFTER_MODIFIER_PHRASES.match(tokens, after) or _bare_tail(tokens, after))


def _approve_weak(tokens: list[_Token], at: int) -> int:
    if _is_bare_si(tokens, at):
        return 1
    if tokens[at].word in {"y", "k"}:
        return 1 if len(tokens) == 1 else 0
    return _APPROVE_WEAK_PHRASES.match(tokens, at)


def _is_bare_si(tokens: list[_Token], at: int) -> bool:
    """Spanish/Italian "sí" as the whole clause; elsewhere "si" is "if"."""
    return tokens[at].word == "si" and at == len(tokens) - 1


def _answer_no(tokens: list[_Token], at: int) -> int:
    if tokens[at].word not in _NO_WORDS:
        return 0
    if at + 1 == len(tokens):
        return 1
    if tokens[at].word == "n":  # a lone letter answers only on its own
        return 0
    return 1 if _AFTER_ANSWER_NO_PHRASES.match(tokens, at + 1) or tokens[at + 1].capitalized else 0


def _bare_tail(tokens: list[_Token], at: int) -> bool:
    while at < len(tokens):
        skipped = (
            _APPROVE_STRONG_PHRASES.match(tokens, at)
            or _APPROVE_WEAK_PHRASES.match(tokens, at)
            or _LIGHT_PHRASES.match(tokens, at)
            or _THANKS_PHRASES.match(tokens, at)
            or _is_cheer(tokens[at])
        )
        if not skipped:
            return False
        at += skipped
    return True


# --- sentences -----------------------------------------------------------------------------------


def _is_cheer(token: _Token) -> bool:
    """An emoji that adds mood, not meaning ("Yes 🎉"); thumbs-down and doubtful faces do not."""
    return (
        len(token.word) == 1
        and unicodedata.category(token.word) == "So"
        and not _REJECT_PHRASES.match([token], 0)
        and token.word not in _DOUBTFUL_EMOJI
    )


def _decide(sentence: _Sentence) -> tuple[Verdict | None, _Cue | None]:
    """The sentence's verdict, or None when it says nothing either way and reading goes on."""
    tokens = sentence.tokens
    cues = sentence.cues
    if sentence.question:
        return "unclear", None
    if any(c.negated_rejection for c in sentence.clauses):
        return "unclear", None
    if not cues:
        return ("unclear", None) if _DOUBT_PHRASES.find(tokens) is not None else (None, None)
    polarities = {c.polarity for c in cues} | _joined_answers(tokens)
    if len(polarities) > 1:
        return "unclear", None
    first = cues[0]
    if first.polarity == "reject":
        doubt = _DOUBT_PHRASES.find(tokens)
        if doubt is not None and tokens[doubt].start < first.start:
            return "unclear", None
        cue_clause = next(c for c in sentence.clauses if c.cue is first)
        if _DOUBT_PHRASES.find(cue_clause.tokens) is not None:
            return "unclear", None
        return "reject", first
    asides = {i for i, c in enumerate(sentence.clauses) if _is_plan(c) or _is_praise(c)}
    if _HEDGE_PHRASES.find(_without_bare_si(sentence, asides)) is not None:
        return "unclear", None
    if not any(c.strong for c in cues) and not _only_bare_approvals(sentence, asides):
        return "unclear", None
    return "approve", first


def _without_bare_si(sentence: _Sentence, asides: set[int]) -> list[_Token]:
    """The sentence's words but for a bare "sí" and the clauses in ``asides``."""
    return [
        t
        for n, c in enumerate(sentence.clauses)
        if n not in asides
        for i, t in enumerate(c.tokens)
        if not _is_bare_si(list(c.tokens), i)
    ]


def _only_bare_approvals(sentence: _Sentence, asides: set[int]) -> bool:
    """A bare "yes" or "ok" approves only when nothing else of substance is said with it."""
    return all(
        n in asides or c.is_light or (c.cue is not None and c.bare_tail)
        for n, c in enumerate(sentence.clauses)
    )


def _is_plan(clause: _Clause) -> bool:
    """Who, when, a plan verb and what it acts on, and no condition: "will publish tomorrow",
    "publishing it now"."""
    tokens = clause.tokens
    at = _skip(tokens, 0, _PLAN_LEAD_PHRASES, _SCHEDULE_PHRASES)
    verb = _PLAN_PHRASES.match(tokens, at)
    if not verb:
        return False
    at += verb
    acted_on = _PLAN_OBJECT_PHRASES.match(tokens, at)
    if not acted_on and at < len(tokens) and not _SCHEDULE_PHRASES.match(tokens, at):
        return False
    return _plain(tokens[at + acted_on :], _SCHEDULE_PHRASES)


def _is_praise(clause: _Clause) -> bool:
    """Praise, then only what it is about: "nice work", "great job on the numbers" (but not
    "nice try")."""
    tokens = clause.tokens
    at = _skip(tokens, 0, _LEAD_IN_PHRASES)
    praise = _PRAISE_PHRASES.match(tokens, at)
    if not praise:
        return False
    at += praise
    if _bare_tail(list(tokens), at):
        return True
    return tokens[at].word in _PRAISE_TOPICS and _plain(tokens[at:])


def _skip(tokens: Sequence[_Token], at: int, *tables: _Phrases) -> int:
    """The position after any run of phrases from ``tables`` starting at ``at``."""
    while at < len(tokens) and (skipped := _match_any(tokens, at, tables)):
        at += skipped
    return at


def _match_any(tokens: Sequence[_Token], at: int, tables: Sequence[_Phrases]) -> int:
    return next((n for table in tables if (n := table.match(tokens, at))), 0)


def _plain(tokens: Sequence[_Token], *allowed: _Phrases) -> bool:
    """No hedge, negation, "no" or doubt among ``tokens``, apart from ``allowed`` phrases."""
    at = 0
    while at < len(tokens):
        if skipped := _match_any(tokens, at, allowed):
            at += skipped
            continue
        if (
            _HEDGE_PHRASES.match(tokens, at)
            or _NEGATOR_PHRASES.match(tokens, at)
            or _REJECT_PHRASES.match(tokens, at)
            or tokens[at].word in _NO_WORDS
            or tokens[at].word in _DOUBTFUL_EMOJI
        ):
            return False
        at += 1
    return True


def _joined_answers(tokens: list[_Token]) -> set[Literal["approve", "reject"]]:
    """Answers joined by a conjunction, as in "yes and no" or "ja oder nein"."""
    found: set[Literal["approve", "reject"]] = set()
    for at in range(1, len(tokens)):
        if _CONJUNCTION_PHRASES.match(tokens, at - 1):
            if _JOINED_YES_PHRASES.match(tokens, at):
                found.add("approve")
            elif _JOINED_NO_PHRASES.match(tokens, at):
                found.add("reject")
    return found


def _says_no(sentences: Sequence[_Sentence]) -> bool:
    """Whether any later sentence takes an approval back ("Yes. No, wait…")."""
    return any(
        c.negated_rejection or (c.cue is not None and c.cue.polarity == "reject")
        for s in sentences
        for c in s.clauses
    )


# --- reasons -------------------------------------------------------------------------------------


def _reason(text: str, opening: int, cue: _Cue) -> str | None:
    """What the person wrote after their "no"; failing that, all they wrote around it."""
    after = _REASON_PAUSE.sub("", _REASON_OBJECT.sub("", text[cue.end :], count=1), count=1)
    while (match := _REASON_LEAD.match(after)) and match.group():
        after = after[match.end() :]
    if after.strip():
        return _tidy(after)
    before = _tidy(text[opening : cue.start])
    return _tidy(text[opening:]) if before else None


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
