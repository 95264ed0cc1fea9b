"""The words every app uses to tell a lab how to adapt the model (Android's ADAPT_ROUTE_TEXT, iOS's
adaptRouteText, the web app's route line): one copy for the tests of all three."""

FINETUNE = "bmcell finetune MODEL --data YOUR_FOLDER --out NEW_MODEL"
CHECK = "bmcell check MODEL --images YOUR_PHOTOS"
ROUTE_LINE = ("Photos from another microscope, stain or camera can get many more answers wrong. To adapt it to your "
              f"lab: label about 20 cells per class (at least 5) in one folder per class, run {FINETUNE} on a "
              f"computer, then export the new model to this app. {CHECK} estimates first how well it will do on your "
              "photos.")
