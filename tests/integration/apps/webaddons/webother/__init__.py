from devserve import rpc


@rpc.service("other")
class Other:
    def ping(self):
        return "pong"
