"""nbgrader plug-ins named in the course directory's nbgrader_config.py (imported
by nbgrader only, never by the rest of the course)."""

from __future__ import annotations

from nbgrader.preprocessors import ClearHiddenTests

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"


class HideHiddenTests(ClearHiddenTests):
    """For feedback: remove hidden-test regions from the source (nbgrader's
    ClearHiddenTests), and from such a cell's error output keep the error's name
    and message but drop the traceback, which would quote the hidden lines."""

    def preprocess_cell(self, cell, resources, cell_index):
        had_hidden = cell.cell_type == "code" and HIDDEN_BEGIN in cell.source
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if had_hidden:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    out["traceback"] = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
        return cell, resources
