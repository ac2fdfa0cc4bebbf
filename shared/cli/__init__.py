"""The command line (``stylefarm``), the demo and the embedded development stack."""
