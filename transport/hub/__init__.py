"""The daemon's I/O loop (`loop`) and the tables only it touches: peers, send backlog, ZAP admissions."""
