"""The review web application (Starlette, server-side Jinja2 templates, no build step).

Pages:

* ``GET /``: settings (reviewer name, question filter, show the model's
  probabilities) and the queue, most doubtful first;
* ``GET /next``: the reviewer's unfinished galaxy, else the first queued galaxy they
  have not done;
* ``GET /galaxy/{id}?q=Qn``: one question of the walk with the image (zoom, invert,
  stretch, keyboard shortcuts); without ``q`` the next unanswered question;
* ``POST /galaxy/{id}/answer`` and ``/skip``: store an answer (checked against the
  tree) or leave the galaxy; ``GET /image/{id}``: the image, looked up by id.

Every POST carries the CSRF token of the browser's session; the image route only
serves files of the catalog (a path never comes from the request).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from urllib.parse import quote

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gzmorph.review.queue import build_queue
from gzmorph.review.security import SESSION_COOKIE, HostGuard, TokenGate, check_csrf, csrf_token
from gzmorph.review.server import ReviewConfig, ReviewSession, open_session, served_hosts
from gzmorph.review.walk import CANT_TELL, AnswerError, next_question, reached_questions

__all__ = ["create_app", "serve", "REVIEWER_COOKIE"]

HERE = Path(__file__).parent
REVIEWER_COOKIE = "gzmorph_reviewer"
SHOW_COOKIE = "gzmorph_show_model"
FILTER_COOKIE = "gzmorph_question"
_REVIEWER = re.compile(r"[\w .@-]{1,40}")
_QUEUE_SHOWN = 50  # rows of the queue listed on the start page


def _cookie(response: Response, name: str, value: str) -> None:
    response.set_cookie(name, value, max_age=90 * 86400, httponly=True, samesite="strict")


class _Views:
    """The request handlers, sharing one :class:`ReviewSession`."""

    def __init__(self, session: ReviewSession) -> None:
        self.s = session
        self.secret = session.store.meta()["secret"]
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    # -------------------------------------------------------------- helpers
    def reviewer(self, request: Request) -> str | None:
        name = request.cookies.get(REVIEWER_COOKIE)
        return name if name and _REVIEWER.fullmatch(name) else None

    def question_filter(self, request: Request) -> str | None:
        q = request.cookies.get(FILTER_COOKIE) or None
        return q if q in {x.name for x in self.s.tree.questions} else None

    def render(self, request: Request, name: str, status: int = 200, **context) -> Response:
        session = request.cookies.get(SESSION_COOKIE) or secrets.token_hex(16)
        context.update(reviewer=self.reviewer(request), csrf=csrf_token(self.secret, session), tree=self.s.tree)
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        if request.cookies.get(SESSION_COOKIE) != session:
            _cookie(response, SESSION_COOKIE, session)
        return response

    async def form(self, request: Request):
        """The posted form, or None when its CSRF token is not this session's."""
        form = await request.form()
        if not check_csrf(self.secret, request.cookies.get(SESSION_COOKIE), form.get("csrf")):
            return None
        return form

    def galaxy_or_none(self, gid: str) -> str | None:
        return gid if gid in self.s.predictions.index else None

    # ---------------------------------------------------------------- pages
    async def home(self, request: Request) -> Response:
        reviewer, question = self.reviewer(request), self.question_filter(request)
        queue = build_queue(self.s.predictions, self.s.tree, question, self.s.scores)
        done = await run_in_threadpool(self.s.store.finished, reviewer) if reviewer else set()
        todo = queue[~queue.index.isin(list(done))]
        rows = [dict(galaxy=g, priority=r.priority, flagged=r.flagged, reason=r.reason) for g, r in todo.head(_QUEUE_SHOWN).iterrows()]
        return self.render(request, "queue.html", rows=rows, n_queue=len(queue), n_todo=len(todo),
                           n_done=len(queue) - len(todo), question=question,
                           policy=self.s.config.acquisition.policy,
                           show_model=request.cookies.get(SHOW_COOKIE, "1" if self.s.config.show_model else "0") == "1",
                           message=request.query_params.get("message"))

    async def settings(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return PlainTextResponse("403: stale or missing form token; reload the page", status_code=403)
        name = str(form.get("reviewer", "")).strip()
        if not _REVIEWER.fullmatch(name):
            return PlainTextResponse("400: a reviewer name is 1-40 letters, digits, spaces or . @ - _",
                                     status_code=400)
        response = RedirectResponse("/", status_code=303)
        _cookie(response, REVIEWER_COOKIE, name)
        _cookie(response, SHOW_COOKIE, "1" if form.get("show_model") else "0")
        _cookie(response, FILTER_COOKIE, str(form.get("question", "")))
        return response

    async def next(self, request: Request) -> Response:
        reviewer = self.reviewer(request)
        if reviewer is None:
            return RedirectResponse("/?message=" + quote("Enter your name first."), status_code=303)
        queue = build_queue(self.s.predictions, self.s.tree, self.question_filter(request), self.s.scores)
        started = [g for g in await run_in_threadpool(self.s.store.in_progress, reviewer) if g in queue.index]
        done = await run_in_threadpool(self.s.store.finished, reviewer)
        todo = started or [g for g in queue.index if g not in done]
        if not todo:
            return RedirectResponse("/?message=" + quote("Nothing left in your queue. Thank you!"), status_code=303)
        return RedirectResponse(f"/galaxy/{quote(todo[0], safe='')}", status_code=303)

    async def galaxy(self, request: Request) -> Response:
        gid, reviewer = self.galaxy_or_none(request.path_params["gid"]), self.reviewer(request)
        if gid is None:
            return PlainTextResponse("404: no such galaxy in this review", status_code=404)
        if reviewer is None:
            return RedirectResponse("/?message=" + quote("Enter your name first."), status_code=303)
        answers = await run_in_threadpool(self.s.store.answers, gid, reviewer)
        order = reached_questions(self.s.tree, answers)
        current = request.query_params.get("q") or next_question(self.s.tree, answers)
        if current is not None and current not in order:
            return PlainTextResponse(f"404: question {current} is not reached by your answers", status_code=404)
        return self.render(request, "galaxy.html", **self.galaxy_context(request, gid, answers, order, current))

    def galaxy_context(self, request: Request, gid: str, answers: dict, order: list[str], current: str | None) -> dict:
        tree, row = self.s.tree, self.s.predictions.loc[gid]
        trail = [(q, tree.question(q), answers[q]) for q in order if q in answers]
        reason = None if self.s.scores is None else str(self.s.scores.loc[gid, "reason"])
        ctx = dict(gid=gid, answers=answers, trail=trail, current=None, cant_tell=CANT_TELL, reason=reason,
                   flagged=[q.name for q in tree.questions if bool(row.get(f"{q.name}_needs_expert", False))],
                   show_model=request.cookies.get(SHOW_COOKIE, "1" if self.s.config.show_model else "0") == "1",
                   first=order[0], position=(order.index(current) + 1 if current else len(order), len(order)))
        if current is not None:
            q = tree.question(current)
            probs = np.array([row[c] for c in q.columns], dtype=np.float64)
            total = probs.sum()
            ctx.update(current=q, probs=(probs / total).tolist() if total > 0 else [np.nan] * len(probs),
                       chosen=answers.get(current),
                       back=order[order.index(current) - 1] if order.index(current) > 0 else None)
        return ctx

    async def answer(self, request: Request) -> Response:
        gid, reviewer = self.galaxy_or_none(request.path_params["gid"]), self.reviewer(request)
        form = await self.form(request)
        if form is None:
            return PlainTextResponse("403: stale or missing form token; reload the page", status_code=403)
        if gid is None or reviewer is None:
            return PlainTextResponse("404: no such galaxy, or no reviewer name", status_code=404)
        try:
            rec = await run_in_threadpool(self.s.store.record_answer, gid, reviewer, str(form.get("question")),
                                          str(form.get("answer")), self.s.model_version)
        except AnswerError as exc:
            return PlainTextResponse(f"422: answer refused: {exc}", status_code=422)
        if rec.next_question is not None:
            return RedirectResponse(f"/galaxy/{quote(gid, safe='')}?q={rec.next_question}", status_code=303)
        return RedirectResponse("/next", status_code=303)

    async def skip(self, request: Request) -> Response:
        gid, reviewer = self.galaxy_or_none(request.path_params["gid"]), self.reviewer(request)
        if await self.form(request) is None:
            return PlainTextResponse("403: stale or missing form token; reload the page", status_code=403)
        if gid is None or reviewer is None:
            return PlainTextResponse("404: no such galaxy, or no reviewer name", status_code=404)
        await run_in_threadpool(self.s.store.skip, gid, reviewer)
        return RedirectResponse("/next", status_code=303)

    async def image(self, request: Request) -> Response:
        # Only ids of the catalog map to files: nothing in the request becomes a path.
        path = self.s.images.get(request.path_params["gid"])
        if path is None or not path.is_file():
            return PlainTextResponse("404: no image with this id in the catalog", status_code=404)
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


def create_app(session: ReviewSession) -> Starlette:
    """The Starlette application of a review session (token gate when the config has a token)."""
    v = _Views(session)
    routes = [
        Route("/", v.home),
        Route("/settings", v.settings, methods=["POST"]),
        Route("/next", v.next),
        Route("/galaxy/{gid}", v.galaxy),
        Route("/galaxy/{gid}/answer", v.answer, methods=["POST"]),
        Route("/galaxy/{gid}/skip", v.skip, methods=["POST"]),
        Route("/image/{gid}", v.image),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    # The host guard runs first: a request for another host name never reaches the token gate or a page.
    middleware = [Middleware(HostGuard, hosts=served_hosts(session.config))]
    if session.config.token:
        middleware.append(Middleware(TokenGate, token=session.config.token))
    return Starlette(routes=routes, middleware=middleware)


def serve(cfg: ReviewConfig) -> None:
    """Run the review server until interrupted."""
    import uvicorn  # only when serving: tests and exports never need it
    session = open_session(cfg)
    app = create_app(session)
    where = f"http://{cfg.host}:{cfg.port}/"
    print(f"reviewing {len(session.predictions)} predicted galaxies; answers -> {cfg.db}")
    print(f"open {where}" + ("?token=<the token>" if cfg.token else ""))
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
