// `segment`'s --point and --box texts (cli/prompt_options.h): what they become and what they refuse.
#include <gtest/gtest.h>

#include "cli/prompt_options.h"
#include "test_support.h"
#include "util/error.h"

namespace ptq4sam {
namespace {

using test::error_of;

TEST(PromptOptions, BoxPartlyOutsideIsClippedToTheImage) {
  const sam::Box box = cli::parse_box_option("-20,10,900.5,200", 640, 480);
  EXPECT_EQ(box.x0, 0.0);
  EXPECT_EQ(box.y0, 10.0);
  EXPECT_EQ(box.x1, 640.0);
  EXPECT_EQ(box.y1, 200.0);
  const sam::Box inside = cli::parse_box_option("1.5,2,3,4.25", 640, 480);
  EXPECT_EQ(inside.x0, 1.5);
  EXPECT_EQ(inside.y1, 4.25);
}

TEST(PromptOptions, PointsKeepTheirCoordinatesAndLabel) {
  const sam::Point p = cli::parse_point_option("400,290.5,0", 640, 480);
  EXPECT_EQ(p.x, 400.0);
  EXPECT_EQ(p.y, 290.5);
  EXPECT_EQ(p.label, 0);
}

TEST(PromptOptions, BadTextsAreOneLineErrorsNamingThem) {
  EXPECT_EQ(error_of([] { cli::parse_box_option("700,500,800,600", 640, 480); }),
            "--box '700,500,800,600': box lies entirely outside the 640x480 image");
  EXPECT_EQ(error_of([] { cli::parse_box_option("5,5,1,1", 640, 480); }), "--box '5,5,1,1': box has x1 < x0 or y1 < y0");
  EXPECT_EQ(error_of([] { cli::parse_box_option("1,2,3", 640, 480); }), "--box '1,2,3': expected X0,Y0,X1,Y1");
  EXPECT_EQ(error_of([] { cli::parse_box_option("1,2,3,4,5", 640, 480); }), "--box '1,2,3,4,5': expected X0,Y0,X1,Y1");
  EXPECT_EQ(error_of([] { cli::parse_box_option("1,2,nan,4", 640, 480); }), "--box '1,2,nan,4': box has a non-finite coordinate");
  EXPECT_EQ(error_of([] { cli::parse_point_option("10,10,2", 640, 480); }),
            "--point '10,10,2': LABEL must be 1 (foreground) or 0 (background)");
  EXPECT_EQ(error_of([] { cli::parse_point_option("641,10,1", 640, 480); }),
            "--point '641,10,1': point lies outside the 640x480 image");
  EXPECT_EQ(error_of([] { cli::parse_point_option("1e999,10,1", 640, 480); }).rfind("--point '1e999,10,1': ", 0), 0u);
  EXPECT_EQ(error_of([] { cli::parse_point_option("1,\n2,1", 640, 480); }).find('\n'), std::string::npos);
}

}  // namespace
}  // namespace ptq4sam
