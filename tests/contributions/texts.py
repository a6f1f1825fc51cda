"""Short original prose (written for these tests, CC0): text no dataset and no benchmark holds."""

PROSE = [
    "The ferry left the harbour at dawn, and the gulls followed it out past the breakwater until the "
    "town was a grey line behind us. Nobody spoke much on the crossing; the engine did the talking, "
    "and the smell of diesel and salt settled into our coats for the rest of the week.\n",
    "Grandmother kept her seeds in paper envelopes, each labelled in pencil with the year and the "
    "garden it came from. Some of the writing had faded to nothing, so every spring we planted a "
    "row of mysteries and waited to learn what they had been.\n",
    "The library closed early on Thursdays, which meant that the long table by the window belonged "
    "to the chess club from four until six. They played without clocks and argued without malice, "
    "and the librarian pretended not to hear the occasional triumphant shout.\n",
]
