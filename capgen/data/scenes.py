"""A split's scenes: the known objects of each image (the shapes data), for grounding scores."""

from __future__ import annotations


class Scenes:
    """A split's scenes by image id (known object boxes, for the shapes data), and the side in
    pixels of the frame their boxes are given in."""

    def __init__(self, source) -> None:
        self.source, self.image_size = source, source.image_size
        self.index = {source.image_id(i): i for i in range(len(source))}

    def scene_of(self, image_id: int):
        if image_id not in self.index:
            raise KeyError(f"image id {image_id} is not in the split's scenes")
        return self.source.scene(self.index[image_id])
