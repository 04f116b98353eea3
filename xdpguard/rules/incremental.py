"""Parse a rule file reusing the rules of an earlier parse: only rules that changed go through YAML.

Parsing and validating 10,000 rules takes most of a second, and an edit to
one of them should not pay that again.  The text is cut, line by line and
without YAML, into the items of each block sequence under a `rules:` key:
a *segment* per rule, from its `- ` to the next one.  The rest of the file
(version, sets, defaults, settings, and any rule list that is not such a
sequence) is read by the ordinary parser from a copy of the text in which
each sequence is one placeholder item followed by blank lines, so every
line keeps its number.  Each segment is looked up in a memo by its text and
direction: a hit gives the validated rule, with its line and the lines of
its warnings relative to the segment.  The other segments are parsed in
YAML passes of YAML_BATCH, each over a copy of the text that keeps only
them (blank lines elsewhere), and validated in file order by the same
parser; all in one pass when one holds an anchor or alias, which can
reach across segments.

The result equals what a full parse gives, or is None: anything unusual (a
YAML or rule error, a tab or a line break other than LF, the limits on
rules and prefixes, a placeholder found anywhere but as a direction's rule
list) sends the caller back to the ordinary parse, which also reports every
error exactly as it always does.  A segment is memoised only when it cannot
depend on the rest of the file: it names no set (`@`) and has no YAML
anchor, alias or merge key (`&`, `*`).  A YAML parse of segments counts how
many items it found against the segments it was given, so a segment that is
not exactly one whole item (a quoted text or flow collection running past a
`- ` line) is never taken for one.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path

from xdpguard.errors import RuleError
from xdpguard.rules.compile import rule_tokens
from xdpguard.rules.describe import describe_rule
from xdpguard.rules.model import MAX_RULES, Rule, RuleSet
from xdpguard.rules.parse import Parser, SetCache, YamlSeq, gc_paused, load_yaml


@dataclass(frozen=True)
class MemoRule:
    """A validated rule as its segment gives it, wherever the segment is."""

    rule: Rule  # line relative to the segment: 1 is its first line
    warnings: tuple[tuple[int, str], ...]  # (relative line, message)
    signature: str  # describe_rule(): what `plan` and `status` compare
    inline_prefixes: int  # the prefixes it counts towards the file's limit
    tokens: bytes  # compile.rule_tokens(): which compiled fields it leaves as they were


# direction -> segment text -> the rule it is
Memo = dict[str, dict[str, MemoRule]]


@dataclass(frozen=True)
class Parsed:
    ruleset: RuleSet
    memo: Memo  # the memoisable rules of this file, for the next parse
    # direction -> per rule, its signature when known (memoised rules), else None
    signatures: dict[str, list[str | None]]
    # direction -> per rule, compile.rule_tokens() (directions whose rules were read here)
    tokens: dict[str, list[bytes]]
    fresh: int  # segments parsed from their text
    reused: int  # segments taken from the memo


# Characters that change how lines split or indent: the whole file is parsed the ordinary way.
_AWKWARD = ("\t", "\r", "\x85", "\u2028", "\u2029", "\ufeff")
# YAML anchors and aliases: they reach from one segment into another.
_ANCHORS = ("&", "*")
# Segments with these depend on other parts of the file: sets (@), anchors and aliases.
_CONTEXT = ("@", *_ANCHORS)
_RULES_KEY = re.compile(r"^( *)rules: *(?:#.*)?$", re.M)
_CONTENT = re.compile(r"^ *[^ #\n]", re.M)  # a line that is neither blank nor a comment
_MARKER = "xdpguard-rules-placeholder-"


# Fresh segments parsed per YAML pass: a pass holds its items' nodes and
# values until their rules are made.
YAML_BATCH = 4096


class _Unsuitable(Exception):
    """The file is not one the segmented parse handles: parse it whole."""


@dataclass
class _Seq:
    """A block sequence under a `rules:` key: its items' segments, by offset and line."""

    indent: int
    offsets: list[int]  # start of each segment; one more: where the sequence ends
    lines: list[int]  # 1-based first line of each segment; one more: the line after the last

    def text(self, src: str, i: int) -> str:
        return src[self.offsets[i] : self.offsets[i + 1]]


def _sequences(text: str) -> list[_Seq]:
    """The block sequences that are the value of a `rules:` key line, in file order."""
    seqs: list[_Seq] = []
    pos = 0
    line_at, line = 0, 1  # line number of offset line_at (counted forward only)
    while (key := _RULES_KEY.search(text, pos)) is not None:
        pos = key.end()
        first = _CONTENT.search(text, pos)
        if first is None:
            break
        start = first.start()
        ind = first.end() - 1 - start
        item = re.compile(rf"^ {{{ind}}}-(?: |$)", re.M)
        if ind < len(key.group(1)) or not item.match(text, start):
            pos = start
            continue
        # The sequence ends at the first content line indented no deeper that is not an item.
        end_m = re.compile(rf"^(?! {{{ind}}}-(?: |$)) {{0,{ind}}}[^ #\n]", re.M).search(text, start)
        end = end_m.start() if end_m is not None else len(text)
        offsets = [m.start() for m in item.finditer(text, start, end)]
        offsets.append(end)
        line += text.count("\n", line_at, start)
        line_at = start
        lines = [line]
        for a, b in zip(offsets, offsets[1:], strict=False):
            lines.append(lines[-1] + text.count("\n", a, b))
        line, line_at = lines[-1], end
        if end == len(text) and not text.endswith("\n"):
            lines[-1] += 1  # the last line has no line break: it still ends the segment
        seqs.append(_Seq(ind, offsets, lines))
        pos = end
    return seqs


class _Assembler(Parser):
    """The ordinary parser, given each sequence's rules from the memo or one YAML pass."""

    def __init__(
        self,
        path: str,
        base_dir: Path,
        text: str,
        seqs: list[_Seq],
        memo: Memo,
        set_cache: SetCache | None,
        memoise: bool = True,
    ) -> None:
        super().__init__(path, base_dir, set_cache)
        self.memoise = memoise
        self.text = text
        self.seqs = seqs
        self.memo = memo
        self.markers = {f"{_MARKER}{k}": k for k in range(len(seqs))}
        self.used: set[int] = set()
        self.new_memo: Memo = {}
        self.signatures: dict[str, list[str | None]] = {}
        self.tokens: dict[str, list[bytes]] = {}
        self.fresh = self.reused = 0

    def rule_list(self, rules: YamlSeq, line: int, direction: str) -> tuple[Rule, ...]:
        k = self.markers.get(rules[0]) if len(rules) == 1 and isinstance(rules[0], str) else None
        if k is None or k in self.used:
            if any(isinstance(r, str) and r in self.markers for r in rules):
                raise _Unsuitable("a placeholder where it does not belong")
            return super().rule_list(rules, line, direction)
        self.used.add(k)
        seq = self.seqs[k]
        n = len(seq.offsets) - 1
        if n > MAX_RULES:
            raise _Unsuitable("too many rules: the ordinary parse says so")
        known = self.memo.get(direction, {})
        texts = [seq.text(self.text, i) for i in range(n)]
        hits = [known.get(t) for t in texts]
        missing = [i for i in range(n) if hits[i] is None]
        # Anchors and aliases reach across segments (a duplicate anchor is an
        # error only within one pass): then every fresh segment goes in one pass.
        anchored = any(c in texts[i] for i in missing for c in _ANCHORS)
        batch = len(missing) if anchored else YAML_BATCH
        self.fresh += len(missing)
        self.reused += n - len(missing)
        fresh: dict[int, tuple[object, int]] = {}
        new_memo = self.new_memo.setdefault(direction, {})
        sigs: list[str | None] = []
        toks: list[bytes] = []
        out: list[Rule] = []
        names: dict[str, int] = {}
        inline = 0  # the memoised rules' own prefixes
        for i, (t, hit) in enumerate(zip(texts, hits, strict=True)):
            base = seq.lines[i] - 1
            if hit is None:
                if i not in fresh:
                    # The next batch: YAML's nodes for 65,536 rules at once took 500 MB.
                    k = bisect.bisect_left(missing, i)
                    fresh = self.parse_fresh(seq, missing[k : k + batch])
                item, item_line = fresh.pop(i)
                nwarn, nprefix = len(self.warnings), self.prefix_count
                r = self.rule(item, item_line, direction, names)
                if not self.memoise:
                    out.append(r)
                    continue
                tok = rule_tokens(r)
                if not any(c in t for c in _CONTEXT):
                    hit = MemoRule(
                        _moved(r, r.line - base),
                        tuple((ln - base, msg) for ln, msg in self.warnings[nwarn:]),
                        describe_rule(r),
                        self.prefix_count - nprefix,
                        tok,
                    )
                    new_memo[t] = hit
                sigs.append(None if hit is None else hit.signature)
                toks.append(tok)
                out.append(r)
                continue
            r = hit.rule
            if r.name in names:
                raise _Unsuitable("a duplicate name: the ordinary parse says where")
            names[r.name] = 0
            inline += hit.inline_prefixes
            if hit.warnings:
                self.warnings.extend((ln + base, msg) for ln, msg in hit.warnings)
            new_memo[t] = hit
            sigs.append(hit.signature)
            toks.append(hit.tokens)
            out.append(Rule(r.name, r.match, r.action, r.rate_limit, r.line + base, r.syn_cookies))
        # Counted once: over the limit anywhere is over it at the end (the ordinary parse says where).
        self.count_prefixes(inline, line)
        if self.memoise:
            self.signatures[direction] = sigs
            self.tokens[direction] = toks
        return tuple(out)

    def parse_fresh(self, seq: _Seq, which: list[int]) -> dict[int, tuple[object, int]]:
        """The YAML items of segments `which`, parsed in one pass with every line in place."""
        if not which:
            return {}
        parts = []
        at = 0  # offset up to which the text is accounted for
        for i in which:
            a, b = seq.offsets[i], seq.offsets[i + 1]
            parts.append("\n" * self.text.count("\n", at, a))
            parts.append(self.text[a:b])
            at = b
        doc = load_yaml("".join(parts), self.path)
        if not isinstance(doc, YamlSeq) or len(doc) != len(which):
            raise _Unsuitable("segments are not one item each")
        out = {}
        for i, item, item_line in zip(which, doc, doc.lines, strict=True):
            if not seq.lines[i] <= item_line < seq.lines[i + 1]:
                raise _Unsuitable("an item outside its segment")
            out[i] = (item, item_line)
        return out


def _moved(r: Rule, line: int) -> Rule:
    return Rule(r.name, r.match, r.action, r.rate_limit, line, r.syn_cookies)


def parse(
    text: str,
    path: str,
    base_dir: Path,
    memo: Memo,
    set_cache: SetCache | None = None,
    memoise: bool = True,
) -> Parsed | None:
    """The rule file's RuleSet, reusing `memo`; None: parse it the ordinary way (parse.parse_text).

    With `memoise` false only the rule set is wanted (`check`): no memo,
    signatures or tokens are made for the next parse."""
    if any(c in text for c in _AWKWARD) or _MARKER in text:
        return None
    seqs = _sequences(text)
    parts = []
    at = 0
    for k, seq in enumerate(seqs):
        a, b = seq.offsets[0], seq.offsets[-1]
        parts.append(text[at:a])
        parts.append(f"{' ' * seq.indent}- {_MARKER}{k}")
        parts.append("\n" * text.count("\n", a, b))
        at = b
    parts.append(text[at:])
    p = _Assembler(path, base_dir, text, seqs, memo, set_cache, memoise)
    try:
        with gc_paused():
            rs = p.ruleset(load_yaml("".join(parts), path))
    except (RuleError, _Unsuitable):
        return None
    if len(p.used) != len(seqs):
        return None  # a `rules:` sequence that is no direction's rules: the ordinary parse reads it
    return Parsed(rs, p.new_memo, p.signatures, p.tokens, p.fresh, p.reused)
