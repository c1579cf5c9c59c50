"""Board builds: a network core behind a UART host interface, on an open FPGA board."""
