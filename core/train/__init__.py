"""Training engine: data sources, architectures, losses, priors and the loop (see DESIGN.md, "Train")."""
