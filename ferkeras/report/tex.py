"""A small TeX subset to HTML: formulas are written once, in TeX; Markdown viewers render it,
and the HTML page gets Unicode with CSS fractions, so it needs no MathJax and no network."""

from __future__ import annotations

import html

_TEX_SYMBOLS = {"partial": "∂", "gamma": "γ", "beta": "β", "mu": "μ", "sigma": "σ", "epsilon": "ε",
                "delta": "δ", "cdot": " · ", "log": "log\u2009", "quad": "\u2003", ",": "\u2009",
                "left": "", "right": ""}
_TEX_OPERATORS = {"=": " = ", "+": " + ", "-": " − ", ",": ",\u2009"}


def tex_to_html(tex: str) -> str:
    """HTML for a formula in the TeX subset used here: \\frac, \\sqrt, \\hat, \\sum, _, ^, Greek."""
    out, end = _tex_group(tex, 0)
    if end < len(tex):
        raise ValueError(f"unbalanced braces in {tex!r}")
    return out


def _tex_group(tex: str, i: int) -> tuple[str, int]:
    """Parse until the closing brace (or the end); return HTML and the index after it."""
    out: list[str] = []
    while i < len(tex):
        c = tex[i]
        if c == "}":
            return "".join(out), i + 1
        if c in "_^":
            arg, i = _tex_arg(tex, i + 1)
            tag = "sub" if c == "_" else "sup"
            out.append(f"<{tag}>{arg}</{tag}>")
        elif c == "{":
            inner, i = _tex_group(tex, i + 1)
            out.append(inner)
        elif c == "\\":
            piece, i = _tex_command(tex, i + 1)
            out.append(piece)
        else:
            if not c.isspace():
                unary = c == "-" and (not out or out[-1].rstrip().endswith(("(", "=", "["))
                                      or out[-1].startswith('<span class="sum">'))
                out.append("−" if unary else _tex_char(c))
            i += 1
    return "".join(out), i


def _tex_arg(tex: str, i: int) -> tuple[str, int]:
    """One argument: a {group}, a \\command, or a single character."""
    while tex[i].isspace():
        i += 1
    if tex[i] == "{":
        return _tex_group(tex, i + 1)
    if tex[i] == "\\":
        return _tex_command(tex, i + 1)
    return _tex_char(tex[i]), i + 1


def _tex_command(tex: str, i: int) -> tuple[str, int]:
    """A \\command starting after the backslash; return HTML and the index after it."""
    j = i
    while j < len(tex) and tex[j].isalpha():
        j += 1
    name = tex[i:j] or tex[i]
    j = max(j, i + 1)
    if name == "frac":
        num, j = _tex_arg(tex, j)
        den, j = _tex_arg(tex, j)
        return f'<span class="frac"><span>{num}</span><span>{den}</span></span>', j
    if name == "sqrt":
        arg, j = _tex_arg(tex, j)
        return f'√<span class="radicand">{arg}</span>', j
    if name == "hat":
        arg, j = _tex_arg(tex, j)
        return arg.replace("</i>", "\u0302</i>", 1) if arg.endswith("</i>") else arg + "\u0302", j
    if name == "sum":
        limits = {"_": "", "^": ""}
        while j < len(tex) and tex[j] in limits:
            limits[tex[j]], j = _tex_arg(tex, j + 1)
        return (f'<span class="sum">∑<span class="limits"><span>{limits["^"]}</span>'
                f'<span>{limits["_"]}</span></span></span>'), j
    if name in _TEX_SYMBOLS:
        return _TEX_SYMBOLS[name], j
    raise ValueError(f"unsupported TeX command \\{name}")


def _tex_char(c: str) -> str:
    if c.isalpha():
        return f"<i>{c}</i>"
    return _TEX_OPERATORS.get(c, html.escape(c))
