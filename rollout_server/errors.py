"""Request errors that name the field and the reason; the app turns them into 4xx JSON answers.

The body carries our fields (`field`, `reason`) and OpenAI's (`message`, `type`, `param`, `code`),
so the official `openai` client reports them as it reports OpenAI's own."""

OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
}


class RequestError(Exception):
    def __init__(self, status: int, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.status, self.field, self.reason = status, field, reason

    def body(self) -> dict:
        kind = OPENAI_TYPES.get(
            self.status, "server_error" if self.status >= 500 else "invalid_request_error"
        )
        return {
            "error": {
                "field": self.field,
                "reason": self.reason,
                "message": f"{self.field}: {self.reason}",
                "type": kind,
                "param": self.field,
                "code": self.status,
            }
        }


def invalid(field: str, reason: str) -> RequestError:
    return RequestError(422, field, reason)


def not_found(field: str, reason: str) -> RequestError:
    return RequestError(404, field, reason)
