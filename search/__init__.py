"""Architecture search on predictors: the encoding (``encoding``), latency and accuracy predictors
(``latency``, ``accuracy``, ``fewshot``), the search problem and algorithms by name (``base``, ``registry``),
results files (``results``), one search run as ``hwnas search`` makes it (``run``) and Pruning-as-Search
(``pas``; one run as ``hwnas pas`` makes it: ``pas_run``). May import ``profiler`` and ``supernet``; modules
are imported by name (``from hwnas.search.registry import make_searcher``) so that importing the package
stays light."""
