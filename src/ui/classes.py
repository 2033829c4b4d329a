"""Step 4: which classes to train on, with their object and image counts."""

from __future__ import annotations

from supervisely.app.widgets import (
    Button,
    Card,
    Checkbox,
    Container,
    Field,
    Flexbox,
    Select,
    Table,
)

from src.data.reader import class_counts


class ClassesStep:
    def __init__(self, project_dir: str, classes: list[str], tags: list[str] = ()) -> None:
        counts = class_counts(project_dir)
        self.all_classes = list(classes)
        self.table = Table(
            columns=["class", "objects", "images"],
            data=[[c, counts[c][0], counts[c][1]] for c in classes],
            widget_id="classes_table",
        )
        self.select = Select(
            [Select.Item(c, c) for c in classes], multiple=True, widget_id="classes_select"
        )
        self.select.set_value(list(classes))
        self.all_button = Button("Select all", button_size="small", widget_id="classes_all")
        self.none_button = Button("Select none", button_size="small", widget_id="classes_none")
        self.drop_empty = Checkbox("Drop training images without objects", False, "classes_drop")
        # ignore regions: objects of these classes, or with these tags (src.data.reader)
        names = list(classes) + [t for t in tags if t not in classes]
        self.ignore = Select(
            [Select.Item(n, n) for n in names], multiple=True, widget_id="classes_ignore"
        )
        self.ignore.set_value([])  # a multiple Select starts with its first item chosen
        self.card = Card(
            "Classes",
            content=Container(
                [
                    self.table,
                    self.select,
                    Flexbox([self.all_button, self.none_button]),
                    self.drop_empty,
                    Field(
                        self.ignore,
                        "Ignore regions: objects of these classes or with these "
                        "tags are not trained on and never count as a miss or a false positive "
                        "(crowds, areas to skip); not a class to train",
                    ),
                ]
            ),
            widget_id="card_classes",
        )

        @self.all_button.click
        def _all() -> None:
            self.select.set_value(list(self.all_classes))

        @self.none_button.click
        def _none() -> None:
            self.select.set_value([])

    @property
    def selected(self) -> list[str]:
        value = self.select.get_value() or []
        chosen = set(value if isinstance(value, list) else [value])
        return [c for c in self.all_classes if c in chosen]

    @property
    def ignored(self) -> tuple[str, ...]:
        value = self.ignore.get_value() or []
        return tuple(value if isinstance(value, list) else [value])

    def set_classes(
        self, classes: list[str] | None, drop_empty: bool, ignore: tuple[str, ...] = ()
    ) -> None:
        """Select these classes (None: every class), the empty-images choice and the ignore
        regions (an experiment's)."""
        known = {item.value for item in self.ignore.get_items()}
        self.ignore.set_value([n for n in ignore if n in known])
        chosen = set(self.all_classes if classes is None else classes)
        self.select.set_value([c for c in self.all_classes if c in chosen])
        self.drop_empty.check() if drop_empty else self.drop_empty.uncheck()

    def problems(self) -> list[str]:
        return [] if self.selected else ["no classes selected: choose at least one class"]

    def get_state(self) -> dict:
        return {
            "classes": self.selected,
            "drop_empty": self.drop_empty.is_checked(),
            "ignore": list(self.ignored),
        }
