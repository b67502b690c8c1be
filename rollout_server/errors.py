"""Request errors that name the field and the reason; the app turns them into 4xx JSON answers."""


class RequestError(Exception):
    def __init__(self, status: int, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.status, self.field, self.reason = status, field, reason

    def body(self) -> dict:
        return {"error": {"field": self.field, "reason": self.reason}}


def invalid(field: str, reason: str) -> RequestError:
    return RequestError(422, field, reason)


def not_found(field: str, reason: str) -> RequestError:
    return RequestError(404, field, reason)
