"""The layering of STYLE.md, checked: imports point down, scripts are thin, files stay readable."""
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT_DIRS = ("tools", "demo")


def _loaded_after(statement):
    """The fcos_core modules that a fresh interpreter has loaded after running ``statement``."""
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('fcos_core')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_config_does_not_import_data():
    assert not {m for m in _loaded_after("import fcos_core.config.paths_catalog") if m.startswith("fcos_core.data")}


def test_inference_does_not_import_the_trainer():
    assert "fcos_core.engine.trainer" not in _loaded_after("import fcos_core.engine.inference")


def _scripts():
    return [p for d in SCRIPT_DIRS for p in sorted((ROOT / d).glob("*.py")) if p.name != "__init__.py"]


def test_scripts_do_not_edit_sys_path_or_import_each_other():
    names = {p.stem for p in _scripts()}
    for path in _scripts():
        text = path.read_text()
        assert "sys.path" not in text, f"{path.relative_to(ROOT)} edits sys.path"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                imported = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = {node.module.split(".")[0]}
            else:
                continue
            assert not imported & (names | {"demo", "tools"}), f"{path.relative_to(ROOT)} imports a script"


def test_no_python_file_is_over_500_lines():
    files = list((ROOT / "fcos_core").rglob("*.py")) + list((ROOT / "tools").glob("*.py"))
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
