# The Python tools the pipelines' rules run (paths under tools/), each with the modules of this
# checkout it imports or loads by path itself: the ONE list both engines read, so that they cannot
# drift apart. Make includes this file (top-level Makefile) and lists $(call tool_sources,TOOL) as
# the prerequisites of a rule that runs tools/TOOL; pipelines/Snakefile reads it (tool_imports())
# and gives its jobs tool_sources(TOOL) as inputs. A tool's sources are its own file and every
# module it reaches through these lines, so a changed module (a `git pull` that fixes
# tools/export/outputs.py) remakes what the tools that import it made, in both engines.
# tests/workflow/test_fronts_agree.py checks each line against the tool's imports, and that every
# rule of either engine that runs a tool lists its sources.
#
# Kept to one form, which the Snakefile's reader refuses anything else than (comments on lines of
# their own, blank lines):
#   TOOL_IMPORTS_<tool> := <module> <module> ...
TOOL_IMPORTS_export/export_layered.py := export/one_file.py export/outputs.py export/gguf_names.py
TOOL_IMPORTS_export/one_file.py := export/outputs.py
TOOL_IMPORTS_export/outputs.py :=
TOOL_IMPORTS_export/gguf_names.py :=
TOOL_IMPORTS_export/merge_layered.py := export/export_layered.py export/one_file.py export/outputs.py
# And tools/prune/report.py, loaded by its path (the benchmarks have a `report` of their own).
TOOL_IMPORTS_export/prune_hf.py := export/export_layered.py export/one_file.py export/outputs.py \
  layerprune_tables.py prune/report.py
TOOL_IMPORTS_export/prune_gguf.py := export/export_layered.py export/one_file.py export/outputs.py \
  export/prune_hf.py
TOOL_IMPORTS_export/export_generator.py := export/export_layered.py export/one_file.py export/outputs.py
TOOL_IMPORTS_report/summarize.py := layerprune_tables.py prune/report.py report/plots.py
TOOL_IMPORTS_report/plots.py :=
TOOL_IMPORTS_report/frontier.py := layerprune_tables.py report/plots.py
TOOL_IMPORTS_report/exact_frontier.py := report/frontier.py layerprune_tables.py
TOOL_IMPORTS_report/frontier_pairs.py := report/frontier.py layerprune_tables.py
TOOL_IMPORTS_prune/report.py := layerprune_tables.py export/gguf_names.py
TOOL_IMPORTS_layerprune_tables.py :=
