"""How the forge grows: scaffold an entry, submit it on a pull-request branch, check it as CI will.

    scaffold   `commonforge new dataset|recipe`: write an entry to edit (contributions.scaffold)
    submit     `commonforge contribute`: a contrib/<kind>-<name>-<version> branch, DCO-signed (contributions.submit)
    check      `commonforge check`: classify base..head, run each entry kind's checks (contributions.check)
    review     `commonforge review`: what a contribution changes, in human terms (contributions.review)

This package may import pipelines, evals, trust and registry; nothing below it imports it.
"""
