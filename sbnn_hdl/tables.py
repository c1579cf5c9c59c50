"""Plain-text and Markdown tables for the reports that commands print and write."""

__all__ = ["format_table", "markdown_table"]


def format_table(header, rows):
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row):
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(header, rows):
    """A GitHub Markdown table."""

    def line(row):
        return "| " + " | ".join(str(c) for c in row) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])
