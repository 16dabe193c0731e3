"""`python -m dltoolkit.specs > docs/parameters.md`: every recipe's parameter table."""

from dltoolkit.core.params import markdown_table
from dltoolkit.registry import specs


def parameters_markdown() -> str:
    """docs/parameters.md: one table per recipe, generated from the Config declarations."""
    parts = [
        "# Recipe parameters\n",
        "Generated from the Config declarations in `dltoolkit/specs/` by "
        "`python -m dltoolkit.specs > docs/parameters.md`; a test checks it is current.\n"
        "Every parameter is a key of a recipe file's `[params]` table and of `--set key=value`, "
        "and a keyword of the recipe class; the CLI column names the verb's own option, if any.\n",
    ]
    for spec in specs().values():
        parts.append(f"## `dltoolkit {spec.task}` · `{spec.class_name}`\n")
        parts.append(markdown_table(spec.config) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(parameters_markdown(), end="")
