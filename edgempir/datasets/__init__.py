"""Data sets read from files too large to hold in memory (image folders); edgempir.data
stays the entry point (``load_dataset``)."""
