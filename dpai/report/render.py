"""Text tables: number formatting, Markdown pipe tables and booktabs LaTeX tables."""
import math

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
                   "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_num(x, digits: int = 2) -> str:
    """`x` with `digits` decimals; '' for a missing value."""
    if is_missing(x):
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return f"{x:.{digits}f}"


def fmt_pm(mean, std, digits: int = 2, latex: bool = False) -> str:
    """'mean ± std'; only the mean when std is missing (fewer than 2 seeds)."""
    if is_missing(mean):
        return ""
    if is_missing(std):
        return fmt_num(mean, digits)
    pm = r" $\pm$ " if latex else " ± "
    return f"{mean:.{digits}f}{pm}{std:.{digits}f}"


def fmt_p(p) -> str:
    """A p-value to 3 significant digits, starred when significant at 0.05; 'n/a' if missing."""
    if is_missing(p):
        return "n/a"
    return f"{p:.3g}" + (" *" if p < 0.05 else "")


def fmt_macs(x) -> str:
    """Multiply-accumulates with 3 significant digits and a K/M/G suffix: 40813184 -> '40.8M'."""
    if is_missing(x):
        return ""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def sparsity_label(sparsity: float) -> str:
    """0.6838 -> '68.38 %', 0.9 -> '90 %'."""
    return f"{round(100 * sparsity, 4):g} %"


def best_rows(values, digits: int = 2) -> set:
    """Indices holding the largest value as displayed (ties at display precision all win)."""
    shown = [None if is_missing(v) else round(float(v), digits) for v in values]
    present = [v for v in shown if v is not None]
    if not present:
        return set()
    top = max(present)
    return {i for i, v in enumerate(shown) if v == top}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(c, c) for c in str(text))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub pipe table; the first column left-aligned, the others right-aligned."""
    def line(cells):
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"
    align = ["---"] + ["---:"] * (len(header) - 1)
    return "\n".join([line(header), "| " + " | ".join(align) + " |"] + [line(r) for r in rows])


def latex_table(header: list[str], rows: list[list[str]], caption: str = "",
                label: str = "") -> str:
    """A booktabs table (small type). Cells are used verbatim (escape them first); the header
    is escaped."""
    spec = "l" + "r" * (len(header) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + caption + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\begin{tabular}{" + spec + "}", r"\toprule",
              " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
