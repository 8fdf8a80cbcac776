"""Compiled templates kept between processes (cnnreport/render/template_cache.py): a cache hit
renders what a compile renders, an edited template or other settings compile again, and a
folder that is unsafe or unusable is never used nor a reason to fail."""

from __future__ import annotations

import os
import stat

import jinja2
import pytest
import torch
from torch import nn

import cnnreport
from cnnreport.render import template_cache, views


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("CNNREPORT_CACHE_DIR", str(root))
    return root


def env_over(folder, **settings):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), **settings)
    return template_cache.attach_template_cache(env)


def cached_files(root):
    return sorted(p.name for p in root.rglob("*.cache"))


def test_a_second_environment_renders_from_the_cache_without_compiling(tmp_path, cache_dir, monkeypatch):
    (tmp_path / "t.j2").write_text("Hello {{ name }}!")
    first = env_over(tmp_path)
    assert first.get_template("t.j2").render(name="a") == "Hello a!"
    assert len(cached_files(cache_dir)) == 1

    second = env_over(tmp_path)

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled although the cache holds the template")

    monkeypatch.setattr(second, "compile", no_compile)
    assert second.get_template("t.j2").render(name="b") == "Hello b!"


def test_an_edited_template_is_compiled_again(tmp_path, cache_dir):
    (tmp_path / "t.j2").write_text("old {{ x }}")
    assert env_over(tmp_path).get_template("t.j2").render(x=1) == "old 1"
    (tmp_path / "t.j2").write_text("new {{ x }}")
    assert env_over(tmp_path).get_template("t.j2").render(x=1) == "new 1"


def test_environments_with_other_settings_do_not_share_compiled_code(tmp_path, cache_dir):
    # The same file compiles to escaping code under autoescape and to plain code without it.
    (tmp_path / "t.j2").write_text("{{ x }}")
    assert env_over(tmp_path, autoescape=True).get_template("t.j2").render(x="<b>") == "&lt;b&gt;"
    assert env_over(tmp_path, autoescape=False).get_template("t.j2").render(x="<b>") == "<b>"
    assert env_over(tmp_path, autoescape=True).get_template("t.j2").render(x="<b>") == "&lt;b&gt;"
    assert len(cached_files(cache_dir)) == 2


def test_corrupt_cache_files_mean_compiling_again(tmp_path, cache_dir):
    (tmp_path / "t.j2").write_text("{{ 6 * 7 }}")
    env_over(tmp_path).get_template("t.j2")
    (path,) = list(cache_dir.rglob("*.cache"))
    path.write_bytes(b"not a bytecode file")
    assert env_over(tmp_path).get_template("t.j2").render() == "42"


def test_an_empty_variable_turns_the_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNREPORT_CACHE_DIR", "")
    (tmp_path / "t.j2").write_text("x")
    assert env_over(tmp_path).bytecode_cache is None
    assert template_cache.cache_root() is None


def test_the_default_folder_is_the_users_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNREPORT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert template_cache.cache_root() == tmp_path / "xdg" / "cnnreport"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert template_cache.cache_root() == tmp_path / "home" / ".cache" / "cnnreport"


def test_a_folder_others_may_write_to_is_not_used(tmp_path, cache_dir):
    cache_dir.mkdir(mode=0o700)
    os.chmod(cache_dir, 0o777)  # anyone could plant code there
    (tmp_path / "t.j2").write_text("x")
    env = env_over(tmp_path)
    assert env.bytecode_cache is None
    assert env.get_template("t.j2").render() == "x"
    assert cached_files(cache_dir) == []


def test_a_symlinked_cache_folder_is_not_followed(tmp_path, cache_dir):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    cache_dir.symlink_to(elsewhere)
    (tmp_path / "t.j2").write_text("x")
    assert env_over(tmp_path).bytecode_cache is None
    assert list(elsewhere.iterdir()) == []


def test_a_cache_path_that_cannot_be_a_folder_means_no_cache(tmp_path, cache_dir):
    cache_dir.write_text("a file where the folder would go")
    (tmp_path / "t.j2").write_text("x")
    env = env_over(tmp_path)
    assert env.bytecode_cache is None
    assert env.get_template("t.j2").render() == "x"


def test_a_cache_that_cannot_be_written_is_not_an_error(tmp_path, cache_dir, monkeypatch):
    (tmp_path / "t.j2").write_text("{{ 1 + 1 }}")
    env = env_over(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(template_cache.FileSystemBytecodeCache, "dump_bytecode", full_disk)
    assert env.get_template("t.j2").render() == "2"


def test_new_folders_are_private(tmp_path, cache_dir):
    (tmp_path / "t.j2").write_text("x")
    env_over(tmp_path).get_template("t.j2")
    for folder in [cache_dir, *[p for p in cache_dir.rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


def test_a_page_rendered_from_the_cache_is_the_page_compiled_afresh(cache_dir, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    report = cnnreport.build_report(model, torch.rand(2, 3, 8, 8), graph=False)

    def fresh(env_name):
        monkeypatch.setattr(views, env_name, None)  # the next render makes its environment anew

    fresh("_ENV"), fresh("_MD_ENV")
    compiled_html, compiled_md = views.render_html(report), views.render_markdown(report)
    assert len(cached_files(cache_dir)) > 5  # the page's templates and the Markdown view's
    fresh("_ENV"), fresh("_MD_ENV")
    cached_html, cached_md = views.render_html(report), views.render_markdown(report)
    monkeypatch.setenv("CNNREPORT_CACHE_DIR", "")
    fresh("_ENV"), fresh("_MD_ENV")
    uncached_html = views.render_html(report)
    assert cached_html == compiled_html == uncached_html
    assert cached_md == compiled_md


def test_both_shipped_environments_keep_their_compiled_templates(cache_dir):
    html_env, md_env = views.make_environment(), views.make_markdown_environment()
    md_env.get_template("report.md.j2")
    md_files = cached_files(cache_dir)
    assert len(md_files) >= 1  # the Markdown view's template, compiled once
    html_env.get_template("base.html.j2")
    assert len(cached_files(cache_dir)) > len(md_files)
    assert {name.split("-")[0] for name in cached_files(cache_dir)} == {_key(html_env), _key(md_env)}


def _key(env):
    return env.bytecode_cache.pattern.split("-")[0]


def test_environments_over_another_template_folder_are_not_cached(tmp_path, cache_dir):
    # A folder of someone's own templates (tests, a fork) compiles as Jinja2 always does.
    assert views.make_environment(tmp_path).bytecode_cache is None
    assert views.make_markdown_environment(tmp_path).bytecode_cache is None
    assert views.make_environment().bytecode_cache is not None
