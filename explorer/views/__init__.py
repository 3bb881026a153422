"""Thin Streamlit render functions, one module per view; figures come from explorer.figures."""
