"""Wire protocols as plain values and bytes: no sockets, threads or clocks live here."""
