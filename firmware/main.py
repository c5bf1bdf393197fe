try:
    from atls.ota.boot import start  # selects the verified firmware slot (docs/OTA.md)
except ImportError:  # a firmware without updates
    from atls.supervisor import main as start
start()
