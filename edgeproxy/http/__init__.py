"""The traffic port's I/O layer: the only place that speaks HTTP/1.1 on sockets.

``protocol``  the client side: an ``asyncio.Protocol`` per connection on
              llhttp (``httptools``), the listening ``TrafficServer``, ``Limits``
``admission`` ``QueueDelay``: shedding while the event loop stays late
``request``   the ``Request`` the pipeline reads, its streamed ``Body``, the
              ``Response`` it writes
``upstream``  the origin side: a keep-alive pool of Protocols on llhttp
``upgrade``   WebSocket upgrades relayed to the origin as a byte tunnel
``wire``      status lines, heads and chunk framing as bytes

Above this layer ``pipeline.py`` still reads as its six stages; the admin
port stays on aiohttp.
"""
