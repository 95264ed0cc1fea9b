"""The words every app uses to tell a lab how to adapt the model (Android's ADAPT_ROUTE_TEXT, iOS's
adaptRouteText, the web app's route line) and to flag a picture unlike every cell the model was trained on
(model.json's "novelty" block): one copy for the tests of all three."""

FINETUNE = "bmcell finetune MODEL --data YOUR_FOLDER --out NEW_MODEL"
CHECK = "bmcell check MODEL --images YOUR_PHOTOS"
ROUTE_LINE = ("Photos from another microscope, stain or camera can get many more answers wrong. To adapt it to your "
              f"lab: label about 20 cells per class (at least 5) in one folder per class, run {FINETUNE} on a "
              f"computer, then export the new model to this app. {CHECK} estimates first how well it will do on your "
              "photos.")

# A picture whose novelty score reaches model.json's novelty threshold: the headline instead of a class, the sentence
# under it, the model panel's line when the model carries the check, and the line under every answer of such a model.
UNKNOWN_CELL = "does not look like a cell this model knows"
UNKNOWN_CELL_WHY = ("It is unlike every cell this model was trained on — another kind of cell (a blast?), not a cell "
                    "at all, or a very different microscope or stain: check by eye.")
NOVELTY_PANEL_LINE = f"Pictures unlike every cell it was trained on get no cell type: it says “{UNKNOWN_CELL}”."


def novelty_line(score: float, threshold: float) -> str:
    """The line under an answer of a model with a novelty block (both numbers with two decimals)."""
    return f"Unlike the cells it was trained on: {score:.2f} × the usual distance (flagged from {threshold:.2f} ×)."
