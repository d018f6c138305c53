"""The book's experiments: one module per paper section, each a function that runs the section
in ``smoke`` or ``full`` mode and returns plain rows, so the notebooks only display them and
the tests can call the same code."""
