"""The caption tokenizer, equal to the one the COCO caption evaluation uses.

It follows the COCO caption evaluation: lower-case, split the way the Stanford
PTBTokenizer does for captions (punctuation and clitics become their own tokens), then drop
punctuation tokens. Training and scoring use the same function, so what the model learns to
emit is what the scorers compare.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache


def tokenize(text: str) -> list[str]:
    """Lower-case PTB tokens with punctuation removed: "A dog's toy." -> [a, dog, 's, toy].

    This is a re-implementation of what the official COCO evaluation does to a caption:
    pycocoevalcap runs the Stanford PTBTokenizer of CoreNLP 3.4.1 (``-preserveLines
    -lowerCase``) and then removes its PUNCTUATIONS tokens. It gives the Java tokenizer's
    tokens (checked token for token against the jar on the official fakecap file, on a few
    hundred hand-written tricky captions and on random strings), including its quirks:
    brackets survive as "-lrb-" & co. (pycocoevalcap lower-cases before it removes "-LRB-"),
    abbreviations keep their period ("st.", "p.m.", "u.s.", "mr.", single letters "b."),
    "$5" -> "$ 5", "£" -> "#", "½" -> "1/2", "1 1/2" -> one token with a no-break space,
    "cannot"/"gonna" -> "can not"/"gon na", emoji and other characters the lexer does not
    know are deleted.

    Differences that remain, by design or because only the Java run can know:

    - Tags: any SGML/HTML-like tag ("<b>", "<br/>") is one token for the Java tokenizer; here
      only capgen's own special tokens ("<unk>", ...) stay whole, so that a decoded caption's
      "<unk>" is one token as it is for Java, and other tags are split into "<", name, ">",
      so a caption cannot smuggle new "words" into the vocabulary. A caption that says
      "<unk>" or "<end>" still never yields a special id: capgen.vocab reads these tokens
      as ordinary words.
    - Context from the next caption: the official run tokenizes all captions as the lines of
      one file, and a few rules look past the end of a line. Here a caption is tokenized as
      if the line after it started with a lower-case word. So when a caption ends in a single
      letter and a period ("... the letter B.") and the next caption of the run starts with
      one of about 45 words (A, The, He, It, ...), Java gives "b" where this gives "b.";
      when one ends in "No." / "Fig." / "pp." / "ca." / "art." / "op." / "prop." and the next
      starts with a digit, Java gives "no." where this gives "no"; and the run's last caption
      has nothing after it, so there a final smiley (":)") or file name ("photo.jpg") is
      split by Java and kept whole here.
    - Line breaks: "\\r", U+2028, U+2029, U+000B and U+000C end a line for the Java tokenizer
      (which shifts every later caption in pycocoevalcap); both capgen tokenizers read them
      as spaces.
    - Unicode: the Java lexer knows the letters of its (Unicode 6) tables and deletes the
      rest. ``_UNKNOWN_TO_JAVA`` lists the letters Python 3.11 (Unicode 14) adds, so they are
      deleted here too; a later Python whose Unicode has yet more letters keeps those.
    """
    words = _plain_words(text)  # (a plain caption has no line breaks to translate)
    if words is not None:
        return words  # letters only: no punctuation token to remove
    return [t for t in (t.lower() for t in _ptb_lex(text.translate(LINE_BREAKS))) if t not in PUNCT]


_ASCII_WORD = re.compile(r"[A-Za-z0-9]")


def has_tokens(text: str) -> bool:
    """Whether tokenize(text) gives at least one token, i.e. the caption is not one of emoji,
    punctuation or symbols only, which would train and score as an empty caption. Quick for
    real captions: an ASCII letter or digit always ends up in a token (no punctuation token
    holds one, and the lexer deletes only characters it does not know), so only text without
    one is tokenized."""
    return bool(_ASCII_WORD.search(text)) or bool(tokenize(text))


# Tokens the COCO evaluation removes after PTB tokenization: pycocoevalcap's PUNCTUATIONS as
# they can appear in lower-cased output (so "-lrb-" & co. survive, as they do there).
PUNCT = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
LINE_BREAKS = str.maketrans({c: " " for c in "\n\r\u2028\u2029\x0b\x0c"})

# ---- fast path ------------------------------------------------------------------------
# Most captions are plain words, single spaces, commas and a final period. For those the PTB
# lexer's answer is the words themselves, unless a word is one it splits ("cannot") or the
# word before the final period is one that keeps it ("etc.", "St.", "B.").
_PLAIN = re.compile(r" *[A-Za-z]+(?:,? +[A-Za-z]+)*,?(?: *\.)? *")
_SPLIT = {"cannot", "gonna", "gotta", "wanna", "lemme", "gimme"}
_KEEPS_PERIOD = set(
    "al ala apr ariz ark art assn aug az bancorp bhd bldg blvd bros ca calif co colo conn corp cos ct dak dec "
    "del esq est etc ext feb fig figs fla fri ga ill inc ind intl jan jr jul jun kan kans ky la ltd mar mass md "
    "mich minn miss mo mon mont neb nev no nos nov oct okla op ore pa penn plc pp pptys prop pte ptes pty ptys rd "
    "rt sep sept seq sq sr sys tel tenn tex thu thurs tue tues univ va vt wash wed wis wisc wyo adj adm adv alex "
    "assoc asst atty attys ave brig capt cf cie cmdr col comdr cpl dept det dr drs elec ens ft gen gov govs hon "
    "insp invt jos lieut lt maj messrs mfg mlle mme mr mrs ms msgr mt mtg natl pfc ph pres prof profs pvt rep "
    "reps rev sen sens sfc sgt spc st ste supt supts treas vs wm".split()
)


def _plain_words(text: str) -> list[str] | None:
    # A vocabulary tokenizes every caption of the train split (570k for COCO), so this path is kept
    # to a regex test and a few str methods: _PLAIN admits only ASCII letters, spaces,
    # commas and one final period, so the words are the runs between those.
    if not _PLAIN.fullmatch(text):
        return None
    words = text.lower().replace(",", " ").replace(".", " ").split()
    if not _SPLIT.isdisjoint(words):
        return None
    body = text.rstrip(" ")
    if body.endswith(".") and body[-2:-1].isalpha():
        last = words[-1]
        if len(last) == 1 or last in _KEEPS_PERIOD:
            return None
    return words


# ---- the PTB lexer ----------------------------------------------------------------------
# A longest-match lexer with the token rules of CoreNLP 3.4.1's PTBLexer, written from its
# observed behaviour (every rule below was checked against the jar). Like JFlex it takes, at
# each position, the rule with the longest match, counting a rule's trailing context, and the
# earliest rule on ties. Python's `re` alternation is first-match, not longest-match, so
# alternatives that can be prefixes of one another are ordered longest first or made rules
# of their own.


def _ci(words: str) -> str:
    """Case-insensitive literals, as in the caseless JFlex spec (its [classes] stay exact)."""
    return f"(?i:{words})"


# Letters the lexer's Unicode tables do not have (assigned or reclassified after them) but
# Python 3.11's do: Java deletes them as unknown characters, so they are no letters here.
_UNKNOWN_TO_JAVA = (
    "\u037F\u0528-\u052F\u0560\u0588\u05EF\u0860-\u086A\u0870-\u0887\u0889-\u088E\u08A1\u08AD-\u08C9\u0978"
    "\u0980\u09FC\u0AF9\u0C34\u0C5A\u0C5D\u0C80\u0CDD\u0D04\u0D54-\u0D56\u0D5F\u0DE6-\u0DEF\u0E86\u0E89\u0E8C"
    "\u0E8E-\u0E93\u0E98\u0EA0\u0EA8-\u0EA9\u0EAC\u13F5\u13F8-\u13FD\u16F1-\u16F8\u170D\u171F\u1878"
    "\u191D-\u191E\u19B0-\u19C0\u19C8-\u19C9\u1B4C\u1C80-\u1C88\u1C90-\u1CBA\u1CBD-\u1CBF\u1CF2-\u1CF3\u1CFA"
    "\u2C2F\u2C5F\u312E-\u312F\u31BB-\u31BF\u4DB6-\u4DBF\u9FCD-\u9FFF\uA698-\uA69D\uA78F\uA794-\uA79F"
    "\uA7AB-\uA7CA\uA7D0-\uA7D1\uA7D3\uA7D5-\uA7D9\uA7F2-\uA7F7\uA8FD-\uA8FE\uA9E0-\uA9E4\uA9E6-\uA9FE"
    "\uAA7E-\uAA7F\uAB30-\uAB5A\uAB5C-\uAB69\uAB70-\uABBF"
)
# Letters to the lexer that Python's Unicode database now calls marks.
_LETTERS_TO_JAVA = "\u1885\u1886"
# Marks and symbols the spec adds to its word letters (JFlex's [:letter:] lacks them).
_WORD_EXTRA = (
    "\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F\u0370-\u037D\u0384\u0385\u03CF"
    "\u03F6\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525\u055A-\u055F\u0591-\u05BD\u05BF\u05C1"
    "\u05C2\u05C4\u05C5\u05C7\u0615-\u061A\u063B-\u063F\u064B-\u065E\u0670\u06D6-\u06EF\u06FA-\u06FF\u070F"
    "\u0711\u0730-\u074F\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA\u0900-\u0903\u093C\u093E-\u094E"
    "\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8\u09CB-\u09CD\u09D7\u09E2\u09E3"
    "\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83\u0ABC-\u0ACF\u0B82\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD"
    "\u0C01-\u0C03\u0C3E-\u0C56\u0D3E-\u0D44\u0D46-\u0D48\u0E30-\u0E3A\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD"
)


def _char_classes() -> tuple[str, str, str]:
    """(letters, word letters, digits) of the Basic Multilingual Plane as regex class bodies.

    Built once from unicodedata; characters outside the BMP are unknown to the lexer (it
    deletes emoji), so they are in none of the classes.
    """
    unknown, extra = re.compile(f"[{_UNKNOWN_TO_JAVA}]"), re.compile(f"[{_WORD_EXTRA}]")
    letters, word_letters, digits = [], [], []
    for cp in range(0x80, 0x10000):
        ch = chr(cp)
        if unknown.match(ch):
            continue
        cat = unicodedata.category(ch)
        if cat[0] == "L" or ch in _LETTERS_TO_JAVA:
            letters.append(cp)
            word_letters.append(cp)
        elif extra.match(ch):
            word_letters.append(cp)
        elif cat == "Nd":
            digits.append(cp)
    return "A-Za-z" + _class_body(letters), "A-Za-z" + _class_body(word_letters), "0-9" + _class_body(digits)


def _class_body(code_points: list[int]) -> str:
    """"a-dx" for [97, 98, 99, 100, 120]: runs of consecutive code points as ranges."""
    out, start = [], None
    for prev, cp in zip([None, *code_points], [*code_points, None]):
        if start is None:
            start = cp
        elif cp is None or cp != prev + 1:
            out.append(chr(start) if start == prev else f"{chr(start)}-{chr(prev)}")
            start = cp
    return "".join(out)


def _latex_quotes(tok: str, left: bool) -> str:
    """The lexer's quote normalisation: ` `` for opening quotes, ' '' for closing ones."""
    tok = re.sub("&apos;|'", "`" if left else "'", tok)
    tok = re.sub('"|&quot;', "``" if left else "''", tok)
    return tok.translate(_QUOTE_CHARS)


_QUOTE_CHARS = str.maketrans(
    {**dict.fromkeys("\u0091\u2018\u201B\u2039", "`"), **dict.fromkeys("\u0092\u2019\u203A", "'"),
     **dict.fromkeys("\u0093\u201C\u00AB", "``"), **dict.fromkeys("\u0094\u201D\u00BB", "''")}
)
_FRACTIONS = {"\u00BC": "1/4", "\u00BD": "1/2", "\u00BE": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00A2": "cents", "\u00A3": "#", "\u0080": "$", "\u00A4": "$", "\u20A0": "$", "\u20AC": "$"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}


def _keep(t: str) -> str:
    return t


def _drop(t: str) -> None:
    return None


def _unsoft(t: str) -> str:  # soft hyphens only mark where a word may break
    return t.replace("\u00AD", "") or "-"


def _nbsp(t: str) -> str:  # tokens never contain spaces: "1 1/2" -> "1\xa01/2"
    return t.replace(" ", "\u00A0")


def _parens(t: str) -> str:
    return t.replace("(", "-LRB-").replace(")", "-RRB-")


def _opening(t: str) -> str:
    return _latex_quotes(t, True)


def _closing(t: str) -> str:
    return _latex_quotes(t, False)


_ACRONYM = "acronym"  # action marker: "U.S." before a sentence start, see _ptb_lex


@lru_cache(maxsize=1)
def _ptb_rules() -> list[tuple[re.Pattern, object]]:
    """The lexer's rules in spec order, compiled on first use (it takes a moment)."""
    letters, word_letters, digits = _char_classes()
    L, W, D = f"[{letters}]", f"[{word_letters}]", f"[{digits}]"
    LD, WD = f"[{letters}{digits}]", f"[{word_letters}{digits}]"
    SP = "[ \t\u00A0\u2000-\u200A\u3000]"
    SPNL = f"(?:{SP}|\n)"
    APOS = "(?:['\u0092\u2019]|(?i:&apos;))"
    APOSETC = f"(?:{APOS}|[`\u0091\u2018\u201B])"
    tag_name = "[A-Za-z][A-Za-z0-9_:.-]*"
    sgml = (f"<(?:[!?][A-Za-z-][^>\r\n]*|{tag_name}(?:[ ]+(?:{tag_name}[ ]*=[ ]*(?:'[^']*'|\"[^\"]*\"|{tag_name})"
            f"|{tag_name}))*[ ]*/?|/{tag_name})[ ]*>")
    word = f"{W}{WD}*(?:[.!?]{W}{WD}*)*"  # "dog.The" and "yahoo!com" are one word
    redaux = f"{APOS}(?:[msdMSD]|{_ci('re|ve|ll')})"  # 's 're 've 'll 'd 'm
    sredaux = f"{_ci('n')}{APOSETC}{_ci('t')}"  # n't
    num = f"(?:{D}*(?:[.:,\u00AD\u066B\u066C]{D}+)+|{D}+)"
    acro_special = _ci("(?:canada|sino|korean|eu|japan|non)-u\\.s|u\\.s\\.-(?:u\\.s\\.s\\.r|u\\.k)")
    acro = f"(?:{acro_special}|[A-Za-z](?:\\.[A-Za-z])*)"  # b, u.s, p.m
    acro2 = f"(?:{acro_special}|[A-Za-z](?:\\.[A-Za-z])+)"
    # Abbreviations that keep their period: ABBREV1 (usually before a lower-case word),
    # ABBREV2 (titles &c., usually before a capital), ABBREV3 (only before a number).
    # Measured on the jar for every 1-3 letter stem and all longer candidates in CoreNLP's
    # lists; a capital in front of a (?i:...) part must be a capital.
    abbrev1 = (_ci("al|ala|apr|ariz|assn|aug|bancorp|bhd|bldg|blvd|bros|calif|colo|conn|corp|cos|co|ct|dak|dec|"
                   "esq|est|etc|ext|feb|fla|fri|ga|inc|ind|intl|jan|jr|jul|jun|kans?|ky|ltd|mar|md|mich|minn|mo|"
                   "mon|mont|neb|nev|nov|oct|okla|penn|plc|rd|rt|sept?|seq|sq|sr|sys|tel|tenn|thurs|thu|tues?|"
                   "univ|va|vt|wed|wisc?|wyo|(?:ed|ph)\\.d")
               + "|A" + _ci("rk|z") + "|D" + _ci("el") + "|I" + _ci("ll") + "|L" + _ci("a") + "|M" + _ci("ass|iss")
               + "|O" + _ci("re") + "|P" + _ci("a") + "|T" + _ci("ex") + "|W" + _ci("ash")
               + "|" + _ci("pp?t") + "[ye]" + _ci("s?"))
    abbrev1 = f"(?:{abbrev1})\\."
    abbrev4 = (f"(?:{acro}|" + _ci("adj|adm|adv|alex|assoc|asst|attys?|ave|brig|capt|cf|cie|co?mdr|col|cpl|dept|det|"
                                   "drs?|elec|ens|ft|gen|govs?|hon|insp|invt|jos|lieut|lt|maj|messrs|mlle|mme|mrs|mr|"
                                   "msgr|ms|mt|natl|pfc|ph|pres|profs?|pvt|reps?|rev|sens?|sfc|sgt|spc|ste?|supts?|"
                                   "treas|vs|wm|a\\.k\\.a") + "|" + _ci("m") + "[ft]g)")
    abbrev3 = _ci("art|ca|figs?|nos?|op|pp|prop") + "\\."
    # A one-letter "acronym" before one of these is a letter ending a sentence: "plan B. The"
    sentence_start = "(?:" + "|".join(w[0] + _ci(w[1:]) for w in (
        "About According Additionally After An A As At But Earlier He Her Here However If In It Last Many "
        "More Mr\\. Ms\\. Now Once One Other Our She Since So Some Such That The Then There These They This "
        "We When While What Yet You").split()) + f"|{sgml})"
    url_end = '[^ \t\n\f\r"<>|.!?(){},-]'
    # ",-_" is a range (",".."_") in the spec's class: no digits, capitals, ":" or "/" here.
    likely_url = ("(?:" + _ci("www") + '\\.(?:[^ \t\n\f\r"<>|.!?(){},]+\\.)+[a-zA-Z]{2,4}'
                  '|(?:[^ \t\n\f\r"`\'<>|.!?(){},-_$]+\\.)+' + _ci("com|net|org|edu") + ")"
                  f'(?:/[^ \t\n\f\r"<>|()]+{url_end})?')
    email = ("(?:" + _ci("&lt;") + '|<)?[a-zA-Z0-9][^ \t\n\f\r"<>|()\u00A0{}]*@(?:[^ \t\n\f\r"<>|(){}.\u00A0]+\\.)*'
             '[^ \t\n\f\r"<>|(){}.\u00A0]+(?:' + _ci("&gt;") + "|>)?")
    apowords = [  # words with an apostrophe that stay whole: 'n' o'clock ol' '90s 'til
        f"{APOS}{_ci('n')}{APOS}?", f"[lLdDjJ]{APOS}", f"{_ci('dunkin|somethin|ol')}{APOS}", f"{APOS}{_ci('em')}",
        f"[A-HJ-XZn]{APOSETC}{L}{{2}}{L}*", f"{APOS}[2-9]0{_ci('s')}", f"{APOS}{_ci('till?')}",
        f"{L}+[aeiouyAEIOUY]{APOSETC}[aeiouA-Z]{L}*", f"{APOS}{_ci('cause')}",
        _ci("cont'd\\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l"),
        f"{_ci('cap')}{APOS}{_ci('n')}", f"{_ci('c')}{APOS}{_ci('est')}", f"{_ci('o')}{APOSETC}{_ci('o')}",
    ]
    thing = f"(?:[dDoOlL]{APOSETC}{LD})?{LD}+(?:[-_\u058A\u2010\u2011](?:[dDoOlL]{APOSETC}{LD})?{LD}+)*"
    thinga = "[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+"  # AT&T
    thing3 = "[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"  # man/woman
    hthing = f"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:{acro2}\\.|[A-Za-z0-9\u00AD]+))+"  # 3.5-4, t-shirt
    filename = f"{WD}+(?:\\.{WD}+)*\\." + _ci("bat|bmp|class|cgi|cpp|c|dll|docx?|exe|gif|gz|html?|h|jar|java|"
                                                 "jpe?g|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|xml|x|zip")
    phone = ("(?:\\([0-9]{2,3}\\)[ \u00A0]?|(?:\\+\\+?)?(?:[0-9]{2,4}[- \u00A0])?[0-9]{2,4}[- \u00A0])"
             "[0-9]{3,4}[- \u00A0]?[0-9]{3,5}")
    ldots = "(?:\\.{3,}|[\u0085\u2026])"
    insentp = "[,;:\u3001]"
    misc_symbol = ("[+%&~^|\\\\\u00A6-\u00A9\u00AC\u00AE-\u00BA\u00D7\u00F7\u0387\u05BE\u05C0\u05C3\u05C6\u05F3\u05F4"
                   "\u0600-\u0603\u0606-\u060A\u060C\u0614\u061B\u061E\u066A\u066D\u0703-\u070D\u07F6-\u07F8\u0964"
                   "\u0965\u0E4F\u1FBD\u2016\u2017\u2020-\u2023\u2030-\u2038\u203B\u203E-\u2042\u2044\u207A-\u207F"
                   "\u208A-\u208E\u2100-\u214F\u2190-\u2BFF\u3012\u30FB\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40"
                   "\uFF5B-\uFF65]")
    quote_chars = "[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091-\u0094\u201E\u201F\u2039\u203A\u00AB\u00BB]"
    asian_smiley = ("[\\^x=~<>]\\.\\[\\^x=~<>\\]|[-\\^x=~<>']_[-\\^x=~<>']|\\([-\\^x=~<>'][_.]?[-\\^x=~<>']\\)"
                    "|\\([\\^x=~<>']-[\\^x=~<>'`]\\)")

    # (token pattern, trailing context or None, action). An action maps the token text to
    # the output token (None: no token); an int n emits all but the last n characters and
    # lexes those again ("cannot" -> "can" + "not").
    rules = [
        (_ci("c\\+\\+|[cf]#"), None, _keep),
        (_ci("cannot|'twas"), None, 3),
        (_ci("'tis|gonna|gotta|lemme|gimme|wanna"), None, 2),
        (_ci("<(?:pad|start|end|unk)>"), None, _keep),  # Java keeps any tag whole; we keep ours (see tokenize)
        ("&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, lambda t: "--"),
        (_ci("&amp;"), None, lambda t: "&"),
        (_ci("&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);"), None, _keep),
        (word, redaux, _unsoft),
        ("[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*", sredaux, _unsoft),  # "do" of "don't"
        (word, None, _unsoft),
        *[(a, None, _keep) for a in apowords],
        (f"{_ci('y')}{APOS}", L, _keep),  # y'all -> y' all
        (_ci("https?://") + f'[^ \t\n\f\r"<>|()]+{url_end}', None, _keep),
        (likely_url, None, _keep),
        (email, None, _keep),
        (f"@[a-zA-Z_][a-zA-Z_0-9]*|#{W}+", None, _keep),  # @user #tag
        (redaux, "[^A-Za-z]", _closing),
        (sredaux, "[^A-Za-z]", _closing),
        (f"{D}{{1,2}}[-/]{D}{{1,2}}[-/]{D}{{2,4}}", None, _keep),  # dates
        (f"[-+]?{num}", None, _unsoft),  # 1,000 3.14 -5 10:30
        ("[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)", None, _keep),
        (f"(?:{D}{{1,4}}[- \u00A0])?{D}{{1,4}}(?:\\\\?/|\u2044){D}{{1,4}}", None, _nbsp),  # 1 1/2
        ("[\u00BC\u00BD\u00BE\u2153-\u215E]", None, lambda t: _FRACTIONS.get(t, t)),
        (_ci("-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\\.D\\.s|pro-|anti-|S&P-500|S&Ls"), None, _keep),
        (_ci("cap") + APOS + _ci("n") + "|" + _ci("c") + APOS + _ci("est"), None, _keep),
        (thing3, None, _keep),
        ("[A-Z]*\\$|#", None, _keep),  # $ US$ #
        ("[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]", None,
         lambda t: _CURRENCY.get(t, t)),
        (f"{acro}\\.", f"{SPNL}+{sentence_start}{SPNL}", _ACRONYM),
        (abbrev3, f"{SPNL}?{D}", _keep),
        (abbrev1, f"{SPNL}(?:{SPNL}|[A-Z])", _keep),  # (Java adds a sentence period, dropped anyway)
        (abbrev1, "[\\s\\S][\\s\\S]", _keep),
        (abbrev1, None, _keep),
        (f"{abbrev4}\\.", None, _keep),
        (abbrev4, SP, _keep),
        (acro, SPNL, _keep),
        (f"{APOS}[0-9][0-9]", SPNL, _keep),  # '90
        (filename, f"{SPNL}|[.?!,]", _keep),
        (f"{word}\\.", insentp, _unsoft),  # "dog.," keeps the period
        (phone, None, lambda t: _parens(_nbsp(t))),
        ("(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5}", None, _keep),
        ('"|' + _ci("&quot;"), "[A-Za-z0-9$]", _opening),
        ('"|' + _ci("&quot;"), None, _closing),
        ("\x7f", None, _drop),
        ("<|" + _ci("&lt;"), None, lambda t: "<"),
        (">|" + _ci("&gt;"), None, lambda t: ">"),
        ("[<>]?[:;=][-o*']?[()DPdpO\\\\{@|\\[\\]]", "[^A-Za-z0-9]", _parens),  # :) ;-(
        (asian_smiley, None, _parens),  # ^_^
        ("[(){}\\[\\]]", None, lambda t: _BRACKETS[t]),
        ("-+", None, lambda t: "--" if 3 <= len(t) <= 4 else t),
        (ldots, f"\\.{SPNL}+{W}", lambda t: "..."),
        (f"{ldots}|\\.[ \u00A0](?:\\.[ \u00A0])+\\.", None, lambda t: "..."),  # ... . . .
        ("@+|#+|_+", None, _keep),
        ("\\*+|(?:\\\\\\*){1,3}", None, _keep),
        (insentp, None, _keep),
        ("[?!]+", None, _keep),
        ("[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]", None, _keep),
        ("=", None, _keep),
        ("/", None, _keep),
        (f"{hthing}\\.", insentp, _unsoft),
        (hthing, None, _unsoft),
        (f"{thing}\\.", insentp, _keep),
        (thing, None, _keep),
        (f"{thinga}\\.", insentp, lambda t: t.replace("&amp;", "&")),
        (thinga, None, lambda t: t.replace("&amp;", "&")),
        ("'", "[A-Za-z][^ \t\n\r\u00A0]", _opening),
        (redaux, None, _closing),
        (f"''|{quote_chars}{{1,2}}|{APOS}", None, _closing),
        ("<<|>>", None, _keep),
        (misc_symbol, None, _keep),
        (f"\x00|{SP}+|[\u200B\u200E\u200F\uFEFF\n]", None, _drop),
        (_ci("&nbsp;"), None, _drop),
    ]
    return [(re.compile(f"(?P<tok>{p})" + (f"(?:{c})" if c else "")), a) for p, c, a in rules]


# In the lexer's loop a run of ASCII letters followed by a space is always that word (save
# the split ones), whatever the rules: a cheap test that skips the full rule scan.
_ASCII_WORD = re.compile(r"[A-Za-z]+(?=[ \n])")


def _ptb_lex(text: str) -> list[str]:
    """PTB tokens of one caption, before lower-casing, punctuation included."""
    text += "\n"  # a caption is one line of the official tokenizer's input
    rules = _ptb_rules()
    out: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        if text[pos] == " ":
            pos += 1
            continue
        m = _ASCII_WORD.match(text, pos)
        if m and m.group().lower() not in _SPLIT:
            out.append(m.group())
            pos = m.end()
            continue
        best, best_len, action = None, 0, None
        for rx, act in rules:
            m = rx.match(text, pos)
            if m and m.end() - pos > best_len:
                best, best_len, action = m, m.end() - pos, act
        if best is None:  # a character the lexer does not know: Java deletes it
            pos += 1
            continue
        tok = best.group("tok")
        if isinstance(action, int):
            out.append(tok[:-action])
            pos += len(tok) - action
        elif action is _ACRONYM:
            # "U.S." stays whole (Java then adds a sentence period, which we would drop); a
            # single letter ("B.") gives the letter, and its period is lexed on its own
            out.append(tok if len(tok) > 2 else tok[0])
            pos += len(tok) - (0 if len(tok) > 2 else 1)
        else:
            pos += len(tok)
            t = action(tok)
            if t is not None:
                out.append(t)
    return out
