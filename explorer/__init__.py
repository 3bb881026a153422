"""PRM Explorer: the Streamlit front end of the PRM engine.

``explorer.figures`` holds pure builders (a run or its state in, a plotly figure or a
DataFrame out) that never touch Streamlit, so they are unit-tested on their own.
``explorer.views`` holds the thin render functions, one per tab, and ``explorer.app`` wires
them together. Runs are read only through ``prm.run.load_run`` and the run folder format.
"""
