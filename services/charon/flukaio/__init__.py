"""FlukaIO 3.1 support: the wire codec, a Python server/client API and the charon gateway.

``codec`` (sans-IO framing, messages, both particle layouts, stream reassembly), ``handshake``
(the version/key rules), ``connection``/``server``/``client`` (blocking sockets with the C
library's buffering), ``session`` and ``mapping`` (what the gateway does with a batch) and
``gateway`` (the asyncio driver of ``charon flukaio-gateway``). Contract: proto-spec/flukaio.md.
"""
