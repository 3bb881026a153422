"""Pure figure and table builders: run (or run state) in, plotly figure or DataFrame out."""
