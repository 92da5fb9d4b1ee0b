"""Blender side of the CLEVR builder: runs inside Blender's own Python (``bpy``), never in msgnet's.

    BPY_PYTHON clevr_render.py JOBS.json OUT_DIR

``bpy`` pins its own numpy, so it lives in a separate environment (``msgnet data setup-clevr``)
and this file imports nothing of msgnet: :mod:`msgnet.data.clevr` writes the scenes of one
worker to ``JOBS.json`` (see :class:`msgnet.data.clevr_scenes.Scene`) and starts this script
on it. For every scene it writes, each atomically (a temporary name, then a rename), so a killed
worker leaves no half-written file and a resumed build skips what exists:

* ``NNNNNNN.png``: the image, Cycles path tracing (shadows, metal reflections), RGB;
* ``NNNNNNN.mask.png``: the second, emission-only pass: every object a flat pure colour
  (``MASK_COLOURS[k]`` for object k), nothing else visible, one sample per pixel with a box
  filter so no pixel mixes two objects: exact masks with occlusion as the camera sees it.

With ``"project"`` in the jobs, it also writes ``projection.json``: those 3-D points in pixel
coordinates of the camera (the clevr-192 orbit, for the dataset's rule).
"""

import json
import math
import os
import sys

import bpy
import mathutils
from bpy_extras.object_utils import world_to_camera_view

MASK_COLOURS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1)]
COLOURS = {"gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
           "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51)}
CAMERA = (7.4, -6.9, 5.0)  # CLEVR's camera position, looking at the origin
LENS_MM = 50.0  # objects of a few pixels at 64 x 64 with a wider lens
LIGHTS = (((4.0, -3.0, 8.0), 800.0, 3.0), ((-6.0, -2.0, 5.0), 300.0, 3.0), ((0.0, 6.0, 6.0), 300.0, 3.0))


def _srgb_to_linear(c):
    c = c / 255.0
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _look_at(obj, target=(0.0, 0.0, 0.0)):
    direction = mathutils.Vector(target) - obj.location
    obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def _material(name, rgb, metal):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*[_srgb_to_linear(c) for c in rgb], 1.0)
    bsdf.inputs["Metallic"].default_value = 1.0 if metal else 0.0
    bsdf.inputs["Roughness"].default_value = 0.2 if metal else 0.7
    return mat


def _emission(name, rgb):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    emit = nodes.new("ShaderNodeEmission")
    emit.inputs["Color"].default_value = (*rgb, 1.0)
    emit.inputs["Strength"].default_value = 1.0
    mat.node_tree.links.new(emit.outputs["Emission"], out.inputs["Surface"])
    return mat


def _new_scene(size, samples):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 1  # one process per worker: parallelism comes from the workers
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.view_settings.view_transform = "Standard"
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    cam.data.lens = LENS_MM
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.location = CAMERA
    _look_at(cam)
    return scene


def _add_shape(shape, radius, x, y, rotation):
    if shape == "cube":
        bpy.ops.mesh.primitive_cube_add(size=2 * radius / math.sqrt(2), location=(x, y, radius / math.sqrt(2)))
    elif shape == "sphere":
        bpy.ops.mesh.primitive_uv_sphere_add(radius=radius, location=(x, y, radius), segments=32, ring_count=16)
        bpy.ops.object.shade_smooth()
    else:
        bpy.ops.mesh.primitive_cylinder_add(radius=radius, depth=2 * radius, location=(x, y, radius), vertices=32)
    obj = bpy.context.object
    obj.rotation_euler[2] = math.radians(rotation)
    return obj


def render_scene(scene_spec, samples, out_dir):
    index = scene_spec["index"]
    image_path = os.path.join(out_dir, f"{index:07d}.png")
    mask_path = os.path.join(out_dir, f"{index:07d}.mask.png")
    if os.path.exists(image_path) and os.path.exists(mask_path):
        return
    size = scene_spec["image_size"]
    scene = _new_scene(size, samples)
    scene.cycles.seed = scene_spec["render_seed"]
    bpy.ops.mesh.primitive_plane_add(size=60)
    ground = bpy.context.object
    ground_mat = _material("ground", (128, 128, 128), False)
    if scene_spec["reflective_ground"]:
        bsdf = ground_mat.node_tree.nodes["Principled BSDF"]
        bsdf.inputs["Metallic"].default_value = 0.6
        bsdf.inputs["Roughness"].default_value = 0.15
    ground.data.materials.append(ground_mat)
    for k, (location, energy, extent) in enumerate(LIGHTS):
        light = bpy.data.objects.new(f"light{k}", bpy.data.lights.new(f"light{k}", "AREA"))
        light.data.energy, light.data.size = energy, extent
        light.location = location
        light.visible_glossy = False  # a reflective ground mirrors the scene, not the lamps
        scene.collection.objects.link(light)
        _look_at(light)
    world = bpy.data.worlds.new("world")
    scene.world = world
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.3
    objects = []
    for k, o in enumerate(scene_spec["objects"]):
        radius = {"small": 0.35, "large": 0.7}[o["size"]]
        obj = _add_shape(o["shape"], radius, o["x"], o["y"], o["rotation"])
        obj.data.materials.append(_material(f"object{k}", COLOURS[o["colour"]], o["material"] == "metal"))
        objects.append(obj)
    _render(scene, image_path)
    # Mask pass: flat emission colours, no ground, no lights, black world; one box-filtered sample.
    ground.hide_render = True
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.0
    for obj in bpy.data.objects:
        if obj.type == "LIGHT":
            obj.hide_render = True
    for k, obj in enumerate(objects):
        obj.data.materials[0] = _emission(f"mask{k}", MASK_COLOURS[k])
    scene.cycles.samples = 1
    scene.cycles.filter_width = 0.01
    scene.cycles.max_bounces = 0
    _render(scene, mask_path)


def _render(scene, path):
    tmp = path[:-4] + ".partial.png"
    scene.render.filepath = tmp
    bpy.ops.render.render(write_still=True)
    os.replace(tmp, path)


def project(points, size, out_dir):
    scene = _new_scene(size, 1)
    bpy.context.view_layer.update()  # the camera's world matrix, as rendering would evaluate it
    coords = []
    for x, y, z in points:
        v = world_to_camera_view(scene, scene.camera, mathutils.Vector((x, y, z)))
        coords.append([v.x * size, (1.0 - v.y) * size])  # pixel x to the right, y down
    with open(os.path.join(out_dir, "projection.json"), "w") as f:
        json.dump(coords, f)


def main(argv):
    jobs_path, out_dir = argv[1], argv[2]
    with open(jobs_path) as f:
        jobs = json.load(f)
    if jobs.get("project"):
        project(jobs["project"], jobs["image_size"], out_dir)
    for scene_spec in jobs.get("scenes", []):
        render_scene(scene_spec, jobs["samples"], out_dir)
        print(f"rendered {scene_spec['index']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
