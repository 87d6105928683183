"""``scalelong-bench``'s library: how a ratio is measured (``measure``), the reference implementations
(``references``), the rows of training steps (``training``), of the framework (``framework``) and of sampling and
evaluation (``sampling``), the suite that orders them (``suite``), the table (``table``); ``cli`` is the command."""
