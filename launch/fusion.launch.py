"""Start the tim_fusion_ros fusion node on a robot: `ros2 launch tim_fusion_ros fusion.launch.py`.

Defaults live in config/fusion.yaml only; this file forwards arguments and never restates them.
Arguments: namespace, params_file, ir_topic, vis_topic, use_sim_time, device, autostart, respawn, respawn_delay.
`device` and `autostart` override the params file only when given.
When the node exits (a configuration error, a crash), the launch ends with it, so a supervisor (systemd, a
robot's bringup) sees the failure; `respawn:=true` restarts the node after `respawn_delay` seconds instead.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

OPTIONAL_OVERRIDES = ("device", "autostart")  # forwarded as parameters only when set on the command line


def _node(context):
    overrides = {}
    for name in OPTIONAL_OVERRIDES:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value.lower() == "true" if name == "autostart" else value
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    if LaunchConfiguration("respawn").perform(context).lower() == "true":
        delay = float(LaunchConfiguration("respawn_delay").perform(context))
        exit_policy = {"respawn": True, "respawn_delay": delay}
    else:
        exit_policy = {"on_exit": Shutdown(reason="fusion_node exited")}
    return [
        Node(
            package="tim_fusion_ros",
            executable="fusion_node",
            name="fusion_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), {"use_sim_time": use_sim_time, **overrides}],
            remappings=[("ir/image", LaunchConfiguration("ir_topic")), ("vis/image", LaunchConfiguration("vis_topic"))],
            output="screen",
            emulate_tty=True,
            **exit_policy,
        )
    ]


def generate_launch_description():
    share = FindPackageShare("tim_fusion_ros")
    return LaunchDescription(
        [
            DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
            DeclareLaunchArgument(
                "params_file",
                default_value=[share, "/config/fusion.yaml"],
                description="parameter file (config/fusion.yaml holds every default)",
            ),
            DeclareLaunchArgument("ir_topic", default_value="ir/image", description="infrared image topic to remap"),
            DeclareLaunchArgument("vis_topic", default_value="vis/image", description="visible image topic to remap"),
            DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
            DeclareLaunchArgument(
                "device", default_value="", description="auto | cpu | cuda | cuda:N (default: params file)"
            ),
            DeclareLaunchArgument("autostart", default_value="", description="true | false (default: params file)"),
            DeclareLaunchArgument(
                "respawn", default_value="false", description="true: restart the node when it exits; false: end launch"
            ),
            DeclareLaunchArgument("respawn_delay", default_value="2.0", description="seconds before a respawn"),
            OpaqueFunction(function=_node),
        ]
    )
