"""Ray Serve's Python proxy serving HTTPS with the stack's certificate, on a Ray of its own (one Ray per
process; Serve is one per cluster and the stack's runs behind HAProxy): run by tests/integration/test_tls.py
with PAYLAKE_STACK_FILE set. It starts Serve the way 'paylake serve up' does for an https URL
(``paylake.serving.deploy.http_options``), deploys a one-route app, prints one JSON line with the port, and
stays up until its stdin closes."""

import json
import sys


def main() -> None:
    import ray
    from ray import serve

    from paylake.serving.deploy import http_options
    from paylake.settings import load_settings
    from paylake.stack.process import free_port

    port = free_port()
    settings = load_settings()
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={
        "url": f"https://127.0.0.1:{port}"})})
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, address="local")
    serve.start(http_options=http_options(settings), proxy_location="HeadOnly")

    @serve.deployment
    class Hello:
        async def __call__(self, request) -> str:
            return "hello over TLS"

    serve.run(Hello.bind(), name="https-probe", route_prefix="/")
    print(json.dumps({"port": port}), flush=True)
    sys.stdin.read()  # until the test closes the pipe
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
