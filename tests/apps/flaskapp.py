"""A small Flask app, served unchanged: ``porch flaskapp:app``."""

import hashlib

from flask import Flask, jsonify, request, url_for

app = Flask(__name__)


@app.get("/hello")
def hello():
    return jsonify(message="hello from flask", path=request.path, script_root=request.script_root)


@app.post("/json")
def post_json():
    data = request.get_json()
    return jsonify(received=data, length=request.content_length)


@app.post("/form")
def post_form():
    return jsonify(form=request.form.to_dict())


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(
        filename=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
        note=request.form.get("note"),
    )


@app.get("/cookies")
def cookies():
    resp = jsonify(cookies=request.cookies.to_dict())
    resp.set_cookie("served", "flask")
    return resp


@app.get("/url")
def url():
    return jsonify(url=url_for("hello", _external=True))


@app.errorhandler(404)
def not_found(e):
    return jsonify(error="not found"), 404
